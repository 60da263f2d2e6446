"""annexsync required: get or set a repository's required content expression."""

from __future__ import annotations

from annexsync.annex.logs import REQUIRED_CONTENT_LOG
from annexsync.cli.repoconfig import expression_command

NAME = "required"
HELP = "get or set required content expression"
DESCRIPTION = """\
With only REPO, print the required content expression of that repository (an
empty line when none is set). With EXPR, check it and record it in
required-content.log on the git-annex branch.

Required content is preferred content that must stay: the repository wants it
(in addition to its 'wanted' expression), and drop refuses to remove it from that
repository, even with enough copies elsewhere. The expression language is the one
of 'annexsync wanted'. A malformed expression is refused with the column (0-based)
of the first error and nothing is written; '' unsets it.

REPO is 'here' (or '.'), a remote name, a repository description or a UUID.
"""

build_parser, run = expression_command(NAME, REQUIRED_CONTENT_LOG)
