"""Uploaded files: the one refusal of a file over its size limit, said before it is read."""

from __future__ import annotations

from django.core.files.uploadedfile import UploadedFile
from django.utils.translation import gettext as _


def too_large(upload: UploadedFile, limit: int) -> str:
    """What to tell the sender of ``upload`` when it has more than ``limit`` bytes, else ""."""
    size = upload.size or 0
    if size <= limit:
        return ""
    return _("The file has %(size)s bytes; the limit is %(limit)s.") % {
        "size": size,
        "limit": limit,
    }
