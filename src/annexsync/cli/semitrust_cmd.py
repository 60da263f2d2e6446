"""annexsync semitrust: return repositories to the default trust level."""

from __future__ import annotations

from annexsync.annex.logs import SEMITRUSTED
from annexsync.cli.repoconfig import trust_command

NAME = "semitrust"
HELP = "return repository to default trust level"
DESCRIPTION = """\
Record in trust.log on the git-annex branch that each REPO is semitrusted, the
default: its copies count toward numcopies, but a drop elsewhere first verifies
that the content is really there.

REPO is 'here' (or '.'), a remote name, a repository description or a UUID.
"""

build_parser, run = trust_command(NAME, SEMITRUSTED)
