"""Email tasks (queue ``email``, gevent pool)."""

from __future__ import annotations

from app import contracts
from app.celery_app import celery_app
from app.mail.smtp import SmtpTransientError
from app.tasks import resources
from app.tasks.base import FleetTask


@celery_app.task(
    bind=True,
    base=FleetTask,
    name=contracts.SEND_WELCOME_EMAIL,
    arguments=contracts.WelcomeEmailArgs,
    autoretry_for=(SmtpTransientError,),
)
def send_welcome_email(self: FleetTask, user_email: str, user_name: str) -> str:
    """Send the welcome email to a new user."""
    return resources.mail_service().send_welcome(user_email, user_name, key=self.request.id or "")
