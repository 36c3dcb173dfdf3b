"""A missed call from an existing patient with nothing urgent or about an appointment
(billing, records, ...; docs/product.md, "The four scenarios").

After the hold: a task to the admin team, due within the general window. The task
completed or a new booking converts the case; otherwise it expires after case_expiry.
"""

from __future__ import annotations

from ringback.domain import recipes
from ringback.domain.practice import Practice
from ringback.workflow import cases
from ringback.workflow.run import Run
from ringback.workflow.state import CallerState, Case


def first_response(run: Run, practice: Practice, state: CallerState, case: Case) -> None:
    role = recipes.ADMIN_TEAM
    cases.act(
        run,
        case,
        "CREATE_TASK",
        recipes.ADMIN_TASK,
        recipes.route(practice, role),
        "A patient called and was missed (general inquiry: billing, records, ...).",
        "general inquiry from a known patient",
        due_at=case["opened_at"] + recipes.window_ms(practice, "general_task_due"),
        params=recipes.staff_params(practice, case, role, "Call the patient back or answer by e-mail."),
    )
    cases.responded(run, case, run.now, "task")
