"""annexsync mincopies: print or set the minimum number of copies."""

from __future__ import annotations

from annexsync.annex.logs import MINCOPIES_LOG
from annexsync.cli.repoconfig import copies_command

NAME = "mincopies"
HELP = "configure minimum number of copies"
DESCRIPTION = """\
Without N, print the repository-wide mincopies setting. With N (a positive
integer), record it in mincopies.log on the git-annex branch.

mincopies is the number of copies that must be verified to exist *right now*
(locked in place, or in trusted repositories) when content is dropped, so that
concurrent drops elsewhere can never leave fewer. It should not exceed numcopies.
An annex.mincopies attribute in .gitattributes overrides it per file. Setting the
value it already has writes nothing.
"""

build_parser, run = copies_command(NAME, MINCOPIES_LOG)
