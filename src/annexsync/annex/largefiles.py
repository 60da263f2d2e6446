"""Which files are "large" (annexed) and which are "small" (stored in git).

``annex.largefiles`` comes from, in order of precedence: git config, the
``annex.largefiles`` gitattribute, and ``annex.largefiles`` in the git-annex branch's
config.log. With none set, every file is large, except dotfiles, which ``add`` puts
in git unless ``annex.dotfiles`` is set (git-annex's rule).

Importing this module is cheap (the clean filter uses it, and git waits for the
filter to start): the log parser, ``git check-attr`` and the expression language
(~30 ms of imports) are imported where first needed.
"""

from __future__ import annotations

from annexsync.errors import AnnexError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from annexsync.annex.branch import AnnexBranch
    from annexsync.annex.repo import AnnexRepo
    from annexsync.policy.expression import Expr


class LargeFiles:
    """Classifies files as large or small for one repository."""

    def __init__(self, repo: AnnexRepo, branch: AnnexBranch) -> None:
        self.repo = repo
        self.branch = branch
        self._cache: dict[str, Expr] = {}
        self._global: str | None | bool = False  # False = not looked up yet

    def _parse(self, text: str, origin: str) -> Expr:
        # Imported here: most repositories have no expression, and it costs ~30 ms.
        from annexsync.policy.expression import ExpressionError, parse

        expr = self._cache.get(text)
        if expr is None:
            try:
                expr = parse(text, mode="largefiles")
            except ExpressionError as e:
                raise AnnexError(f"bad annex.largefiles in {origin}: {e}") from None
            self._cache[text] = expr
        return expr

    def configured(self) -> str | None:
        """The repository-wide expression (git config, else config.log), if any."""
        if self._global is False:
            value = self.repo.config.get("annex.largefiles")
            if value is None:
                from annexsync.annex.logs import parse_map_log

                entry = parse_map_log(self.branch.read("config.log")).get("annex.largefiles")
                value = entry[1] if entry else None
            self._global = value
        assert self._global is not True
        return self._global

    def classify(self, files: Sequence[str], sizes: Mapping[str, int], *,
                 force_large: bool = False, force_small: bool = False,
                 dotfiles: bool = False) -> dict[str, bool]:
        """Map each file to True (annex it) or False (put it in git)."""
        if force_large or force_small:
            return dict.fromkeys(files, force_large)
        from_git_config = self.repo.config.get("annex.largefiles")
        attrs: list[dict[str, str | None]] = []
        if from_git_config is None and files:
            from annexsync.git.attributes import CheckAttr

            attrs = CheckAttr(self.repo.git, ["annex.largefiles"]).get_many(list(files))
        default = self.configured()
        result: dict[str, bool] = {}
        for i, f in enumerate(files):
            text = from_git_config
            origin = "git config"
            if text is None and attrs:
                text = attrs[i].get("annex.largefiles")
                origin = ".gitattributes"
            if text is None:
                text, origin = default, "config.log"
            if text is None:
                result[f] = dotfiles or not _is_dotfile(f)
                continue
            if _is_dotfile(f) and not dotfiles:
                result[f] = False
                continue

            from annexsync.policy.expression import MatchContext

            expr = self._parse(text, origin)
            result[f] = expr.evaluate(MatchContext(file=f, size=sizes.get(f)))
        return result


def _is_dotfile(f: str) -> bool:
    return any(part.startswith(".") for part in f.split("/"))
