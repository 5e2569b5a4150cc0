"""Errors a user can cause. Each carries one message that names the fix."""


class HarnessError(Exception):
    """A problem the user can act on (bad settings, missing binary, port taken...).

    The CLI prints it as one line, without a traceback; the pytest plugin turns it
    into a usage error.
    """


class ConfigError(HarnessError):
    """A setting is invalid."""


class MissingDependency(HarnessError):
    """A system binary or package is not installed."""


class ServiceFailed(HarnessError):
    """A service of the stack did not start or did not become ready (`service` names it
    when known; a failed stack's report records it)."""

    def __init__(self, message: str, service: str | None = None):
        super().__init__(message)
        self.service = service
