"""The exception users see: one line that says what is wrong and what to change."""


class UserError(ValueError):
    """A mistake a user can make (flag, gin binding, path, mesh, task name, input file).

    The CLI prints `mesh-t5 <command>: error: <message>` and exits with status 2; the
    message is one line naming the offending value and what to do instead.
    """


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable or does not fit the model; one line naming it and what to do."""
