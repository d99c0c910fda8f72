from django.db import transaction

from .models import User


@transaction.atomic
def user_sign_up(*, username: str, password: str) -> User:
    """Create an account. The caller has validated the username and password (SignUpForm)."""
    return User.objects.create_user(username=username, password=password)
