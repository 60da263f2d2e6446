"""annexsync untrust: stop counting repositories' copies."""

from __future__ import annotations

from annexsync.annex.logs import UNTRUSTED
from annexsync.cli.repoconfig import trust_command

NAME = "untrust"
HELP = "do not trust a repository"
DESCRIPTION = """\
Record in trust.log on the git-annex branch that each REPO is untrusted: its
copies do not count toward numcopies (a removable disk that may be lost, a
temporary clone). whereis lists them separately. Use semitrust to undo.

REPO is 'here' (or '.'), a remote name, a repository description or a UUID.
"""

build_parser, run = trust_command(NAME, UNTRUSTED)
