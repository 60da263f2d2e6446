"""annexsync trust: trust repositories to keep their content."""

from __future__ import annotations

from annexsync.annex.logs import TRUSTED
from annexsync.cli.repoconfig import trust_command

NAME = "trust"
HELP = "trust a repository"
DESCRIPTION = """\
Record in trust.log on the git-annex branch that each REPO is trusted: its
copies are counted toward numcopies without checking that they still exist, and
drops elsewhere rely on them. If a trusted repository loses content, that content
can be lost for good, so --force is required, as with git-annex.

REPO is 'here' (or '.'), a remote name, a repository description or a UUID.
See also semitrust (the default level), untrust and dead.
"""

build_parser, run = trust_command(NAME, TRUSTED)
