"""The live records of an ``index.dat`` as one process knows them: what C-FIND, C-MOVE, C-GET and C-STORE
look up, kept in memory and brought up to date record by record (docs/index-format.md §12).

For each field asked for (a param, by its tag), the table holds the stored value of every slot: a list
indexed by slot number, None for a free slot, equal values shared. Once a field has been searched it also
has a *lookup*: trimmed value -> the slots holding it, ascending (a lone slot as an int: most UIDs have
one record, and an int costs far less than a list). A field whose VR the Specific Character Set affects
is looked up by (character set, trimmed value), so that a query whose character set differs from the
records' converts each distinct value once, not each record; what the matcher derives from a key (its
value converted to UTF-8, a parsed date) is kept beside the lookup in :meth:`RecordTable.notes` and goes
with the key. The free slots are kept as a heap (candidates: the owner checks a slot on disk before
writing it).

The owner (``StorageArea``) builds a table from one column read per field and then applies the writes it
makes and those its fellow workers journal, slot by slot (:meth:`RecordTable.put`,
:meth:`RecordTable.remove`): a query costs in proportion to the records its keys select, a store in
proportion to the fields held. A change nobody journaled (DCMTK's) makes the owner build the table again.
"""
from __future__ import annotations

import functools
import heapq
from bisect import bisect_left, insort
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from itertools import compress, repeat

from qrscp.dicom import dictionary
from qrscp.dicom.charset import AFFECTED_VRS

#: The Specific Character Set param: it keys the lookups of the fields it affects (which need it held).
SPECIFIC_CHARACTER_SET = 0x00080005
#: Values not worth sharing between records: they are unique.
_UNSHARED = frozenset({0x00080018})
#: What matching trims from both sides of a value (docs/matching.md §4).
PAD = b" \0"

#: A lookup key: a trimmed value, or (character set, trimmed value).
LookupKey = bytes | tuple[bytes, bytes]
#: The slots of a lookup key: one, or several ascending.
Entry = int | list[int]


def slots_of(entry: Entry) -> Sequence[int]:
    """The slots of a lookup entry, ascending."""
    return (entry,) if type(entry) is int else entry  # type: ignore[return-value]


def count_of(entry: Entry) -> int:
    """How many slots a lookup entry names."""
    return 1 if type(entry) is int else len(entry)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=None)
def charset_keyed(tag: int) -> bool:
    """Whether the lookup of ``tag`` is keyed by (character set, value): its VR is affected by it."""
    return dictionary.vr(tag) in AFFECTED_VRS


class RecordTable:
    """The live records of one index (see the module's docstring). Not shared between processes."""

    def __init__(self, slot_count: int, live: Sequence[int], columns: Mapping[int, Iterable[bytes]]) -> None:
        """A table of ``slot_count`` slots whose live ones are ``live`` (ascending), with ``columns``:
        tag -> the values of the live slots in that order."""
        self.slot_count = slot_count
        self._slots = list(range(slot_count))   # the slot numbers, one int object each for every list
        self.live_count = len(live)
        if self.live_count == slot_count:
            self._live = bytearray(b"\1") * slot_count
            self.free: list[int] = []
        else:
            self._live = bytearray(slot_count)
            for slot in live:
                self._live[slot] = 1
            self.free = [slot for slot in range(slot_count) if not self._live[slot]]   # ascending: a heap
        self._columns: dict[int, list[bytes | None]] = {}
        self._lookups: dict[int, dict[LookupKey, Entry]] = {}
        self._notes: dict[int, dict[LookupKey, object]] = {}
        self._charsets: dict[bytes, int] = {}   # live records by Specific Character Set, once it is held
        for tag, values in columns.items():
            self.load(tag, values, live)

    # --- reading -------------------------------------------------------------------------------------

    @property
    def fields(self) -> frozenset[int]:
        """The tags whose values the table holds."""
        return frozenset(self._columns)

    def live_slots(self) -> list[int]:
        """The live slots, ascending."""
        return list(compress(self._slots, self._live))

    def values(self, tag: int) -> list[bytes | None]:
        """The value of ``tag`` in every slot (None: free); KeyError if the table does not hold it."""
        return self._columns[tag]

    def record(self, slot: int, tags: Iterable[int]) -> dict[int, bytes]:
        """The values of ``tags`` in the live ``slot``."""
        return {tag: self._columns[tag][slot] for tag in tags}  # type: ignore[misc]

    def charsets(self) -> list[bytes]:
        """The distinct Specific Character Set values of the live records, as stored (KeyError unless the
        table holds them)."""
        self._columns[SPECIFIC_CHARACTER_SET]
        return list(self._charsets)

    def key(self, tag: int, slot: int) -> LookupKey:
        """The lookup key of ``slot`` in the lookup of ``tag`` (see :func:`charset_keyed`)."""
        value = self._columns[tag][slot].strip(PAD)  # type: ignore[union-attr]
        return (self._columns[SPECIFIC_CHARACTER_SET][slot], value) if charset_keyed(tag) else value  # type: ignore

    def lookup(self, tag: int) -> dict[LookupKey, Entry]:
        """Lookup key -> the slots holding it (:func:`slots_of`); built when first asked for, then kept up
        to date. Not to be changed by the caller."""
        lookup = self._lookups.get(tag)
        if lookup is None:
            live = self.live_slots()
            keys: list = list(map(bytes.strip, self._live_values(tag, live), repeat(PAD)))
            if charset_keyed(tag):
                keys = list(zip(self._live_values(SPECIFIC_CHARACTER_SET, live), keys))
            lookup = dict(zip(keys, live))
            if len(lookup) < len(keys):   # some keys have several slots
                groups: defaultdict[LookupKey, list[int]] = defaultdict(list)
                for key, slot in zip(keys, live):
                    groups[key].append(slot)
                lookup = {key: slots[0] if len(slots) == 1 else slots for key, slots in groups.items()}
            self._lookups[tag] = lookup
            self._notes[tag] = {}
        return lookup

    def _live_values(self, tag: int, live: list[int]) -> Sequence[bytes]:
        column = self._columns[tag]
        if len(live) == self.slot_count:
            return column  # type: ignore[return-value]
        return [column[slot] for slot in live]  # type: ignore[misc]

    def notes(self, tag: int) -> dict[LookupKey, object]:
        """What a reader derived from the keys of the lookup of ``tag`` (a key's entry goes when the key
        leaves the lookup)."""
        self.lookup(tag)
        return self._notes[tag]

    def slots_with(self, tag: int, value: bytes) -> list[int]:
        """The live slots whose stored value of ``tag`` is exactly ``value``, ascending."""
        lookup = self.lookup(tag)
        trimmed = value.strip(PAD)
        keys = [(charset, trimmed) for charset in self.charsets()] if charset_keyed(tag) else [trimmed]
        values = self._columns[tag]
        return sorted(slot for key in keys if key in lookup for slot in slots_of(lookup[key]) if values[slot] == value)

    # --- changing ------------------------------------------------------------------------------------

    def load(self, tag: int, values: Iterable[bytes], live: Sequence[int] | None = None) -> None:
        """Hold ``tag`` too: ``values`` are its values in the live slots (``live``: those slots, ascending;
        by default the table's own). Equal values are shared (an iterator lets the others go at once)."""
        live = self.live_slots() if live is None else live
        shared: dict[bytes, bytes] = {}
        interned = list(values) if tag in _UNSHARED else [shared.setdefault(value, value) for value in values]
        if len(live) == self.slot_count:
            column: list[bytes | None] = interned  # type: ignore[assignment]
        else:
            column = [None] * self.slot_count
            for slot, value in zip(live, interned):
                column[slot] = value
        self._columns[tag] = column
        if tag == SPECIFIC_CHARACTER_SET:
            for value in interned:
                self._charsets[value] = self._charsets.get(value, 0) + 1

    def resize(self, slot_count: int) -> None:
        """The file holds ``slot_count`` slots now; the new ones are free (until :meth:`put`)."""
        for slot in range(self.slot_count, slot_count):
            heapq.heappush(self.free, slot)
        grow = slot_count - self.slot_count
        if grow > 0:
            self._slots.extend(range(self.slot_count, slot_count))
            self._live.extend(bytes(grow))
            for column in self._columns.values():
                column.extend([None] * grow)
            self.slot_count = slot_count

    def put(self, slot: int, values: Mapping[int, bytes]) -> None:
        """Slot ``slot`` holds a live record now, with ``values`` (tag -> stored value; a tag the table
        holds and ``values`` lacks is empty). A value equal to the previous slot's is shared with it (the
        records of a series usually follow each other)."""
        self._unlink(slot)
        self.resize(max(self.slot_count, slot + 1))
        slot = self._slots[slot]
        for tag, column in self._columns.items():
            value = values.get(tag, b"")
            previous = column[slot - 1] if slot else None
            column[slot] = previous if previous == value else value
        if SPECIFIC_CHARACTER_SET in self._columns:
            charset = self._columns[SPECIFIC_CHARACTER_SET][slot]
            self._charsets[charset] = self._charsets.get(charset, 0) + 1  # type: ignore[index]
        self._live[slot] = 1
        self.live_count += 1
        for tag, lookup in self._lookups.items():
            key = self.key(tag, slot)
            entry = lookup.get(key)
            if entry is None:
                lookup[key] = slot
            elif type(entry) is int:
                lookup[key] = [entry, slot] if entry < slot else [slot, entry]
            else:
                insort(entry, slot)  # type: ignore[arg-type]

    def remove(self, slot: int) -> None:
        """Slot ``slot`` is free now (it becomes a candidate for the next record)."""
        if self._unlink(slot):
            heapq.heappush(self.free, slot)

    def _unlink(self, slot: int) -> bool:
        """Forget the record in ``slot``; whether there was one."""
        if slot >= self.slot_count or not self._live[slot]:
            return False
        for tag, lookup in self._lookups.items():
            key = self.key(tag, slot)
            entry = lookup[key]
            if type(entry) is int:
                del lookup[key]
                self._notes[tag].pop(key, None)
            else:
                del entry[bisect_left(entry, slot)]  # type: ignore[union-attr,arg-type]
                if len(entry) == 1:  # type: ignore[arg-type]
                    lookup[key] = entry[0]  # type: ignore[index]
        if SPECIFIC_CHARACTER_SET in self._columns:
            charset = self._columns[SPECIFIC_CHARACTER_SET][slot]
            self._charsets[charset] -= 1  # type: ignore[index]
            if not self._charsets[charset]:  # type: ignore[index]
                del self._charsets[charset]  # type: ignore[arg-type]
        for column in self._columns.values():
            column[slot] = None
        self._live[slot] = 0
        self.live_count -= 1
        return True
