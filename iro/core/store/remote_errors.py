"""Errors of fsspec and its backends (s3fs, botocore, ...) as the project's ArtifactError: one line
naming the URL, what failed and which setting fixes it, and never a secret.

Secrets can hide in a backend's message (a signed URL, an echoed option), so every message is
scrubbed of the values of secret-looking options and of the AWS secrets in the environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from iro.core.store.artifact import STORAGE_ERRNOS, ArtifactError

# storage option names whose values must never reach a log or a message
_SECRET_NAME = re.compile(r"secret|token|password|passwd|credential|access_key|^key$", re.I)
CREDENTIALS_HINT = (
    "credentials come from the environment: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
    "(or AWS_PROFILE), never from the config"
)


def secret_values(options: dict[str, Any]) -> list[str]:
    """Values of secret-looking options (nested too) and of the AWS secrets in the environment."""
    found = [os.environ.get(k, "") for k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")]
    for name, value in options.items():
        if isinstance(value, dict):
            found += secret_values(value)
        elif _SECRET_NAME.search(str(name)) and value is not None:
            found.append(str(value))
    return [v for v in found if len(v) >= 4]


def public_url(url: str) -> str:
    """`url` without user information (`s3://key:secret@bucket` forms)."""
    return re.sub(r"^([a-z0-9+.-]+://)[^/@]*@", r"\1", url, flags=re.I)


def endpoint_of(options: dict[str, Any]) -> str | None:
    """The endpoint the options name (s3fs takes it at the top or in client_kwargs)."""
    client = options.get("client_kwargs")
    nested = client.get("endpoint_url") if isinstance(client, dict) else None
    return options.get("endpoint_url") or nested


class RemoteErrors:
    """The translation for one store: `where` is its URL and `endpoint` its server, both without
    user information; `working_copy` is the local directory a full disk would be in."""

    def __init__(self, url: str, options: dict[str, Any], working_copy: Path):
        self.where = public_url(url)
        self.endpoint = public_url(str(endpoint_of(options) or ""))
        self.working_copy = working_copy
        self._secrets = secret_values(options)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def failure(self, doing: str, err: BaseException) -> str:
        """Why a remote operation failed and which setting fixes it."""
        name = type(err).__name__
        detail = self.scrub(f"{name}: {err}")
        endpoint = self.endpoint or "unset, the provider's default"
        if isinstance(err, OSError) and err.errno in STORAGE_ERRNOS:
            fix = f"free space or make the working copy {self.working_copy} writable (store.cache)"
        elif isinstance(err, ImportError):
            fix = "install the fsspec backend for this URL's protocol (s3fs for s3://)"
        elif "Credential" in name or "credentials" in str(err).lower():
            fix = CREDENTIALS_HINT
        elif isinstance(err, PermissionError) or "AccessDenied" in str(err):
            fix = f"the credentials in the environment may not access it; {CREDENTIALS_HINT}"
        elif isinstance(err, FileNotFoundError) and "bucket" in str(err).lower():
            fix = "create the bucket or correct store.root"
        else:
            fix = (
                f"is the server up? check store.options.endpoint_url (now {endpoint}) and that "
                f"the bucket exists (store.root); {CREDENTIALS_HINT}"
            )
        return f"artifact store {self.where}: could not {doing} ({detail}); {fix}"

    @contextmanager
    def translated(self, doing: str) -> Iterator[None]:
        """Turn any error of the remote filesystem into an ArtifactError naming the URL."""
        try:
            yield
        except ArtifactError:
            raise
        except Exception as err:
            raise ArtifactError(self.failure(doing, err)) from None
