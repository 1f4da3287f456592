"""The block manager: which KV blocks each sequence owns (after nano-vllm's block_manager.py and vLLM's paging).

The KV cache is a pool of `num_blocks` blocks of `block_size` token positions each (the tensors live in
PagedKVPool, paged_runner.py; this file only does the bookkeeping). A sequence's `block_table` lists its blocks in
token order: token i of the sequence lives in block `block_table[i // block_size]`, slot `i % block_size`.

    free list        blocks nobody owns, the least recently freed first (so freed prefix blocks live longest)
    reference count  how many sequences use a block; a block returns to the free list when it drops to 0
    prefix cache     a full block whose KV has been computed is keyed by a chained hash of its tokens
                     (the hash of the block before it, and its own token ids); a later prompt that starts with
                     the same tokens takes the same blocks (count + 1) and skips their prefill

Not thread-safe: only the worker's scheduler calls it, under its lock.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None           # set once the block is full and computed (prefix caching on)
    token_ids: tuple = field(default=())


def chained_hash(previous: int | None, token_ids) -> int:
    """A block's key: its tokens and, through `previous`, every token before them."""
    return hash((previous, tuple(token_ids)))


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, prefix_caching: bool):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"the KV pool needs at least one block of at least one token, got {num_blocks} "
                             f"blocks of {block_size}")
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_ids: deque[int] = deque(range(num_blocks))
        self.cached: dict[int, int] = {}  # chained hash -> block id (full, computed blocks)
        self.hit_tokens = 0                # prompt tokens served from the prefix cache, since start
        self.queried_tokens = 0            # prompt tokens looked up in it, since start

    # ---- counts --------------------------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free(self) -> int:
        return len(self.free_ids)

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    def blocks_for(self, tokens: int) -> int:
        """Blocks that hold `tokens` token positions."""
        return -(-tokens // self.block_size)

    # ---- a sequence's blocks -------------------------------------------------------------------------------
    def _cached_prefix(self, token_ids: list[int]) -> list[int]:
        """Ids of the cached blocks that the start of `token_ids` matches (full blocks only, never the block
        holding the last token: at least one token is always computed, so the step yields logits)."""
        found, previous = [], None
        for start in range(0, len(token_ids) - 1 - (len(token_ids) - 1) % self.block_size, self.block_size):
            chunk = token_ids[start:start + self.block_size]
            previous = chained_hash(previous, chunk)
            block_id = self.cached.get(previous)
            if block_id is None or self.blocks[block_id].token_ids != tuple(chunk):
                break
            found.append(block_id)
        return found

    def can_allocate(self, token_ids: list[int]) -> bool:
        """Whether a sequence holding `token_ids` fits now (counting the blocks it would share)."""
        hits = self._cached_prefix(token_ids) if self.prefix_caching else []
        reused_free = sum(1 for block_id in hits if self.blocks[block_id].ref_count == 0)
        return self.blocks_for(len(token_ids)) - len(hits) + reused_free <= self.num_free

    def allocate(self, seq) -> None:
        """Give `seq` blocks for all its tokens so far; shared prefix blocks count as computed
        (`seq.num_computed_tokens`, `seq.num_cached_tokens`). Call can_allocate first."""
        token_ids = seq.all_token_ids
        hits = self._cached_prefix(token_ids) if self.prefix_caching else []
        for block_id in hits:
            self._share(block_id)
        fresh = [self._take_free() for _ in range(self.blocks_for(len(token_ids)) - len(hits))]
        seq.block_table = hits + fresh
        seq.num_cached_tokens = seq.num_computed_tokens = len(hits) * self.block_size
        if self.prefix_caching:
            self.hit_tokens += seq.num_cached_tokens
            self.queried_tokens += len(token_ids)

    def can_append(self, seq) -> bool:
        """Whether `seq`'s newest token has a slot (it needs a new block only when its blocks are all full)."""
        return len(seq.block_table) * self.block_size >= len(seq.all_token_ids) or self.num_free > 0

    def append(self, seq) -> None:
        """Make room for `seq`'s newest token (a new block when its last one is full)."""
        if len(seq.block_table) * self.block_size < len(seq.all_token_ids):
            seq.block_table.append(self._take_free())

    def commit(self, seq) -> None:
        """After a step: key every full block of `seq` whose KV is now computed, so later prompts can share it."""
        if not self.prefix_caching:
            return
        token_ids, previous = seq.all_token_ids, None
        for index in range(seq.num_computed_tokens // self.block_size):
            chunk = tuple(token_ids[index * self.block_size:(index + 1) * self.block_size])
            previous = chained_hash(previous, chunk)
            block = self.blocks[seq.block_table[index]]
            if block.hash is None:
                block.hash, block.token_ids = previous, chunk
                self.cached.setdefault(previous, block.block_id)

    def free(self, seq) -> None:
        """`seq` gives its blocks back (finished, cancelled or preempted); its KV counts as not computed."""
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free_ids.append(block_id)
        seq.block_table = []
        seq.num_computed_tokens = 0

    def _share(self, block_id: int) -> None:
        """One more user of a cached block (it leaves the free list if nobody used it)."""
        block = self.blocks[block_id]
        if block.ref_count == 0:
            self.free_ids.remove(block_id)
        block.ref_count += 1

    def _take_free(self) -> int:
        """The least recently freed block, for new tokens: its old prefix key goes (its slots will be rewritten)."""
        block = self.blocks[self.free_ids.popleft()]
        if block.hash is not None and self.cached.get(block.hash) == block.block_id:
            del self.cached[block.hash]
        block.hash, block.token_ids, block.ref_count = None, (), 1
        return block.block_id
