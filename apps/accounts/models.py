from django.contrib.auth.models import AbstractUser


class User(AbstractUser):
    """The account. Custom from the first migration so fields can be added without a swap."""
