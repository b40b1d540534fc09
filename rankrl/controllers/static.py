"""Controllers with fixed ranks: plain LoRA at one rank (the no-op baseline) and fixed ranks per group or kind."""

from __future__ import annotations

from rankrl.controllers.base import ControllerContext, Decision, RankController

KINDS = ("attention", "mlp")


class FixedController(RankController):
    """Plain LoRA at one rank: the baseline every other controller is compared with.

    Args:
        rank: Rank of every group, set at the first decision and never changed. ``None`` keeps the ranks the
            run starts with (a pure no-op).
    """

    name = "fixed"

    def __init__(self, rank: int | None = None) -> None:
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 0):
            raise ValueError(f"fixed: the rank must be a non-negative integer, got {rank!r}.")
        self.rank = rank
        self._ranks: list[int] | None = None

    def bind(self, *, num_groups: int, split_by_kind: bool, r_max: int, rank_step: int,
             total_steps: int | None) -> None:
        if self.rank is not None and self.rank > r_max:
            raise ValueError(f"fixed:{self.rank} is above r_max={r_max}; lower the rank or raise r_max.")

    def minimum_ranks(self, group_ranks: list[int], rank_step: int) -> list[list[int]]:
        return [[self.rank] * len(group_ranks) if self.rank is not None else list(group_ranks)]

    def decide(self, ctx: ControllerContext) -> Decision:
        if self._ranks is None:
            self._ranks = [self.rank] * ctx.num_groups if self.rank is not None else list(ctx.group_ranks)
            return Decision(list(self._ranks), f"fixed: every group at rank {self._ranks} from now on")
        return Decision(list(self._ranks), "fixed: hold")

    def state_dict(self) -> dict:
        return {"ranks": self._ranks}

    def load_state_dict(self, state: dict) -> None:
        self._ranks = state.get("ranks")


class LayerwiseController(RankController):
    """Fixed ranks per group, or per module kind; set at the first decision and then held.

    Groups are depth blocks of transformer layers, bottom first (group ``g`` holds layers
    ``[g*L/G, (g+1)*L/G)``). With ``split_by_kind`` every depth block is split in two and groups alternate
    attention (even index: query, key, value and the attention output projection) and MLP (odd index:
    intermediate and output dense), so ``layerwise:4,8,4,8`` on two depth blocks gives attention rank 4 and
    MLP rank 8; ``by_kind={"attention": 4, "mlp": 8}`` says the same for any number of blocks.

    Args:
        ranks: One rank per group.
        by_kind: Rank per module kind (``attention``, ``mlp``); needs a run with ``split_by_kind``.
    """

    name = "layerwise"

    def __init__(self, ranks: list[int] | None = None, by_kind: dict[str, int] | None = None) -> None:
        if (ranks is None) == (by_kind is None):
            raise ValueError("layerwise: give either one rank per group (layerwise:0,4,8,16) or ranks per kind "
                             "(layerwise:attention=4,mlp=8).")
        values = list(ranks) if ranks is not None else list(by_kind.values())
        if not values or any(isinstance(r, bool) or not isinstance(r, int) or r < 0 for r in values):
            raise ValueError(f"layerwise: ranks must be non-negative integers, got {ranks or by_kind}.")
        if by_kind is not None and set(by_kind) != set(KINDS):
            raise ValueError(f"layerwise: ranks per kind need exactly {KINDS}, got {sorted(by_kind)}.")
        self.ranks = list(ranks) if ranks is not None else None
        self.by_kind = dict(by_kind) if by_kind is not None else None

    def group_ranks(self, num_groups: int) -> list[int]:
        """The configured rank of each of ``num_groups`` groups."""
        if self.ranks is not None:
            return list(self.ranks)
        return [self.by_kind[KINDS[g % 2]] for g in range(num_groups)]

    def bind(self, *, num_groups: int, split_by_kind: bool, r_max: int, rank_step: int,
             total_steps: int | None) -> None:
        if self.by_kind is not None and not split_by_kind:
            raise ValueError("layerwise ranks per kind need groups split by kind (split_by_kind=True); "
                             "otherwise give one rank per group.")
        if self.ranks is not None and len(self.ranks) != num_groups:
            raise ValueError(f"layerwise got {len(self.ranks)} ranks {self.ranks} but the run has {num_groups} "
                             f"groups; give {num_groups} ranks.")
        too_high = [r for r in self.group_ranks(num_groups) if r > r_max]
        if too_high:
            raise ValueError(f"layerwise ranks {too_high} are above r_max={r_max}.")

    def minimum_ranks(self, group_ranks: list[int], rank_step: int) -> list[list[int]]:
        return [self.group_ranks(len(group_ranks))]

    def decide(self, ctx: ControllerContext) -> Decision:
        ranks = self.group_ranks(ctx.num_groups)
        if ranks == ctx.group_ranks:
            return Decision(ranks, "layerwise: hold")
        return Decision(ranks, f"layerwise: set the configured ranks {ranks}")
