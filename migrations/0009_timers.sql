-- Timers claimed ahead (issue 14): a task handed back to run at a fixed moment that nothing but the
-- clock can change (a sleep's end, a retry's back-off) may be claimed a little before it is due, so
-- that its execution is loaded and waiting in a worker when the moment comes. A task parked on an
-- event wait (an event may wake it earlier) or on its branches is not such a timer.
ALTER TABLE zart_tasks ADD COLUMN timer boolean NOT NULL DEFAULT false;
