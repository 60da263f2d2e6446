"""annexsync numcopies: print or set the desired number of copies."""

from __future__ import annotations

from annexsync.annex.logs import NUMCOPIES_LOG
from annexsync.cli.repoconfig import copies_command

NAME = "numcopies"
HELP = "configure desired number of copies"
DESCRIPTION = """\
Without N, print the repository-wide numcopies setting. With N (a positive
integer), record it in numcopies.log on the git-annex branch, which every clone,
annexsync and git-annex alike, reads.

numcopies is how many copies of each file's content should exist; drop refuses
to go below it unless forced, and lackingcopies= in preferred content counts
against it. An annex.numcopies attribute in .gitattributes overrides it per file.
Setting the value it already has writes nothing.
"""

build_parser, run = copies_command(NAME, NUMCOPIES_LOG)
