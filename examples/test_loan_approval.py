from zart.testing import assert_steps

from loan_approval import loan_approval


def test_a_loan_is_approved_after_its_week_of_cooling_off(zart_env):
    handle = zart_env.start(loan_approval, {"applicant": "ada"})
    zart_env.advance("2h")  # the bureau's five failures and their back-offs
    zart_env.advance("7d")  # the cooling-off week
    zart_env.send_event(handle.id, "decision", {"approve": True})
    assert handle.result(timeout=5) == "approved"
    assert_steps(handle, ["credit-score#1", "sleep:cooling-off#1", "event:decision#1"])
    assert [a.attempt for a in handle.attempts()] == [1, 2, 3, 4, 5, 6]


def test_an_application_without_a_decision_expires(zart_env):
    handle = zart_env.start(loan_approval, {"applicant": "bob"})
    while zart_env.advance_to_next():  # from one timer to the next until nothing waits
        pass
    assert handle.result(timeout=5) == "expired"
