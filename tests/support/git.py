"""git with a fixed identity, for the tests that build repositories."""

import os
import subprocess

GIT_IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}


def git(*args, cwd, env=None, check=True):
    """Run `git ARGS` in `cwd` as GIT_IDENTITY (plus `env`); with `check`, insist it succeeds.

    Returns the CompletedProcess, its stdout and stderr as text.
    """
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, **GIT_IDENTITY, **(env or {})})
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result
