"""annexsync wanted: get or set a repository's preferred content expression."""

from __future__ import annotations

from annexsync.annex.logs import PREFERRED_CONTENT_LOG
from annexsync.cli.repoconfig import expression_command

NAME = "wanted"
HELP = "get or set preferred content expression"
DESCRIPTION = """\
With only REPO, print the preferred content expression of that repository (an
empty line when none is set). With EXPR, check the expression and record it in
preferred-content.log on the git-annex branch, where git-annex reads it too.

REPO is 'here' (or '.'), a remote name, a repository description or a UUID.
EXPR is one argument, so quote it: annexsync wanted here 'include=*.mp3 or present'.
Terms are those of git-annex (include=, exclude=, largerthan=, smallerthan=,
copies=, lackingcopies=, approxlackingcopies=, inallgroup=, inbackend=, metadata=,
present, standard, groupwanted, anything, nothing, ...) combined with and, or,
not and parentheses, evaluated left to right without precedence. 'standard' uses
the expression of the repository's standard group (see 'annexsync group').

As in git-annex, an expression that negates 'present' (say 'not present', or
'not standard' for a manual repository) is stored but matches nothing: it would
make content come and go forever.

A malformed expression is refused with the column (0-based) of the first error,
and nothing is written. An empty EXPR ('') unsets the expression: the repository
then wants whatever the command's default is (sync --content: everything).
"""

build_parser, run = expression_command(NAME, PREFERRED_CONTENT_LOG)
