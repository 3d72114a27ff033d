"""Exceptions the command line turns into clean messages and exit codes."""


class ToonlabError(Exception):
    """A failure the user can act on; printed without a traceback, exit code 1."""

    exit_code = 1


class UsageError(ToonlabError):
    """Bad command-line usage or bad parameters; exit code 2."""

    exit_code = 2


class ParamsError(UsageError):
    """params.yaml (or an override) failed validation. `problems` holds one line per key."""

    def __init__(self, problems: list[str], source: str = "params"):
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"invalid {source}:\n{lines}")


class MissingWeightsError(ToonlabError):
    """An optional pretrained model file is not on disk."""
