"""``+ac``: TCP-wrappers host access control, as DCMTK's libwrap check with the daemon name ``dcmqrscp``.

The rules of hosts_access(5), with the ``allow``/``deny`` options of hosts_options(5), read afresh for
every connection:

* access is granted when a rule of hosts.allow matches, else denied when a rule of hosts.deny matches,
  else granted; a missing file has no rules. An ``allow`` or ``deny`` option at the end of the matching
  rule decides instead (so every rule can live in one file); an invalid option denies, as libwrap does;
* a rule is ``daemon_list : client_list [ : option : option ... ]``; a backslash at the end of a line
  joins the next line; a line starting with ``#`` is a comment (only in the first column, as libwrap);
* list elements are separated by blanks and/or commas; ``list EXCEPT list`` excludes (and nests);
* patterns, compared without regard to case: ``ALL``, ``LOCAL`` (a known host name without a dot),
  ``KNOWN``, ``UNKNOWN``, ``.domain.suffix``, ``address.prefix.``, ``n.n.n.n/m.m.m.m`` (the address ANDed
  with the mask equals the net), ``n.n.n.n/prefixlen``, ``[ipv6]`` and ``[ipv6net]/prefixlen``, ``*`` and
  ``?`` wildcards, ``/path`` (a file of patterns), ``user@host`` (the user is never known here).

Differences from libwrap: the client's host name is the one the caller passes (no lookup of our own, so
``PARANOID`` never matches and with ``--disable-host-lookup`` the name is unknown); a rule file that
exists but cannot be read denies (libwrap then grants); ``daemon@host`` matches only with host ``ALL``
(the server's own address is not known here); NIS netgroups (``@group``) never match; options other than
``allow``/``deny`` are not carried out (``twist`` denies, the others are ignored with a warning).
Malformed rules are skipped with a warning on ``dcmtk.dcmnet``; nothing here raises.
"""
from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from qrscp import log

#: What libwrap calls a host name or address it does not know.
UNKNOWN = "unknown"

#: Separators of list elements.
_LIST_SEPARATORS = re.compile(r"[,\s]+")

#: hosts_options(5): option names and whether they take a value (True: required, None: optional).
_OPTIONS: dict[str, bool | None] = {
    "allow": False, "deny": False, "twist": True,  # these three end a rule
    "spawn": True, "severity": True, "setenv": True, "umask": True, "user": True, "group": True,
    "linger": True, "banners": True, "keepalive": False, "rfc931": None, "nice": None,
}
_LAST_OPTIONS = frozenset({"allow", "deny", "twist"})

_logger = log.get_logger(log.NET)


@dataclass(frozen=True)
class _Client:
    """The two ends of a connection as the rules see them."""

    daemon: str
    address: str  # dotted IPv4 (an IPv4-mapped IPv6 address is shown as IPv4), IPv6, or "unknown"
    name: str  # host name, or "unknown"

    @property
    def name_known(self) -> bool:
        """Whether the host name is known."""
        return self.name.lower() != UNKNOWN


def host_allowed(daemon: str, client_addr: str, client_name: str | None,
                 allow_file: str = "/etc/hosts.allow", deny_file: str = "/etc/hosts.deny") -> bool:
    """Whether ``daemon`` may serve the client at ``client_addr`` named ``client_name`` (None: unknown)."""
    client = _Client(daemon, _normalised_address(client_addr), client_name or UNKNOWN)
    for path, grants in ((allow_file, True), (deny_file, False)):
        verdict = _table_verdict(path, client, grants)
        if verdict is not None:
            return verdict
    return True


def _normalised_address(address: str) -> str:
    """The address as libwrap shows it: an IPv4-mapped IPv6 address in dotted IPv4 form."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address or UNKNOWN
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


# --- rule files --------------------------------------------------------------------------------

def _read(path: str) -> str | None:
    """The text of a rule or pattern file; "" if it does not exist; None (with a warning) if unreadable."""
    try:
        with open(path, encoding="latin-1") as file:
            return file.read()
    except (FileNotFoundError, IsADirectoryError):
        return ""
    except OSError as error:
        _logger.warning("cannot open %s: %s", path, error.strerror)
        return None


def _rules(text: str) -> Iterator[tuple[int, str]]:
    """The rules of a file with their (last) line numbers: continuation lines joined, comments skipped."""
    lines = text.split("\n")
    rule = ""
    for number, line in enumerate(lines, start=1):
        continued = line.endswith("\\")
        rule += line[:-1] if continued else line
        if continued and number < len(lines):
            continue
        if rule.strip() and not rule.startswith("#"):
            yield number, rule
        rule = ""


def _split_field(text: str) -> tuple[str, str | None]:
    """Split at the first ``:`` outside ``[...]`` (IPv6 addresses); (text, None) if there is none."""
    depth = 0
    for index, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == ":" and depth == 0:
            return text[:index], text[index + 1:]
    return text, None


def _table_verdict(path: str, client: _Client, grants: bool) -> bool | None:
    """The verdict of the first rule of ``path`` that matches: ``grants`` unless its options say
    otherwise; None if no rule matches; False if the file cannot be read."""
    text = _read(path)
    if text is None:
        return False
    for number, rule in _rules(text):
        daemons, rest = _split_field(rule)
        if rest is None:
            _logger.warning('%s, line %d: missing ":" separator', path, number)
            continue
        clients, options = _split_field(rest)
        if (_list_match(daemons, lambda token: _daemon_match(token, client))
                and _list_match(clients, lambda token: _client_match(token, client))):
            if options is None:
                return grants
            return _options_verdict(options, grants, f"{path}, line {number}")
    return None


# --- lists and patterns ------------------------------------------------------------------------

def _list_match(text: str, match: Callable[[str], bool]) -> bool:
    """Whether a list matches: an element before ``EXCEPT`` matches and the list after it does not."""
    return _tokens_match([token for token in _LIST_SEPARATORS.split(text) if token], match)


def _tokens_match(tokens: list[str], match: Callable[[str], bool]) -> bool:
    """:func:`_list_match` on the elements of a list."""
    upper = [token.upper() for token in tokens]
    end = upper.index("EXCEPT") if "EXCEPT" in upper else len(tokens)
    if not any(match(token) for token in tokens[:end]):
        return False
    return end == len(tokens) or not _tokens_match(tokens[end + 1:], match)


def _string_match(pattern: str, value: str) -> bool:
    """libwrap's string patterns: ``.suffix``, ``ALL``, ``KNOWN``, ``prefix.``, wildcards, equality."""
    pattern, value = pattern.lower(), value.lower()
    if pattern.startswith("."):
        return len(value) > len(pattern) and value.endswith(pattern)
    if pattern == "all":
        return True
    if pattern == "known":
        return value != UNKNOWN
    if pattern.endswith("."):
        return value.startswith(pattern)
    if "*" in pattern or "?" in pattern:
        return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))
    return pattern == value


def _daemon_match(token: str, client: _Client) -> bool:
    """A daemon pattern; ``daemon@host`` only with host ``ALL`` (our own address is not known here)."""
    at = token.find("@", 1)
    if at < 0:
        return _string_match(token, client.daemon)
    return token[at + 1:].upper() == "ALL" and _string_match(token[:at], client.daemon)


def _client_match(token: str, client: _Client) -> bool:
    """A client pattern; in ``user@host`` the user is unknown (no RFC 931 lookup)."""
    at = token.find("@", 1)
    if at < 0:
        return _host_match(token, client)
    return _host_match(token[at + 1:], client) and _string_match(token[:at], UNKNOWN)


def _host_match(token: str, client: _Client) -> bool:
    """A host pattern against the client's address and name."""
    upper = token.upper()
    if token.startswith("@"):
        return False  # NIS netgroup
    if token.startswith("/"):
        text = _read(token)
        return bool(text) and any(_host_match(pattern, client) for pattern in text.split())
    if upper == "KNOWN":
        return client.address != UNKNOWN and client.name_known
    if upper == "LOCAL":
        return client.name_known and "." not in client.name
    if token.startswith("["):
        return _ipv6_match(token, client.address)
    if "/" in token:
        return _masked_match(token, client.address)
    looks_numeric = set(token) <= set("0123456789./")
    return _string_match(token, client.address) or (not looks_numeric and _string_match(token, client.name))


def _masked_match(token: str, address: str) -> bool:
    """``net/mask`` or ``net/prefixlen``: the IPv4 address ANDed with the mask equals ``net``."""
    net_text, _, mask_text = token.partition("/")
    try:
        net = int(ipaddress.IPv4Address(net_text))
        if mask_text.isdigit():
            mask = int(ipaddress.IPv4Network(f"0.0.0.0/{mask_text}").netmask)
        else:
            mask = int(ipaddress.IPv4Address(mask_text))
    except ValueError:
        _logger.warning("bad net/mask expression: %s", token)
        return False
    try:
        return int(ipaddress.IPv4Address(address)) & mask == net
    except ValueError:
        return False


def _ipv6_match(token: str, address: str) -> bool:
    """``[address]`` or ``[net]/prefixlen`` against an IPv6 client address."""
    match = re.fullmatch(r"\[([^\]]*)\](?:/(\d+))?", token)
    try:
        if match is None:
            raise ValueError(token)
        network = ipaddress.IPv6Network(f"{match[1]}/{match[2] or 128}", strict=False)
    except ValueError:
        _logger.warning("bad IPv6 address or network: %s", token)
        return False
    try:
        return ipaddress.IPv6Address(address) in network
    except ValueError:
        return False


# --- options -----------------------------------------------------------------------------------

def _option_fields(text: str) -> list[str]:
    """The options of a rule: fields separated by ``:`` (``\\:`` is a colon inside a value)."""
    return [field.replace("\\:", ":").strip() for field in re.split(r"(?<!\\):", text)]


def _name_value(option: str) -> tuple[str, str]:
    """An option's name (lower case) and value: ``name value`` or ``name = value``."""
    name, *value = re.split(r"\s*=\s*|\s+", option, maxsplit=1)
    return name.lower(), value[0] if value else ""


def _options_verdict(text: str, grants: bool, where: str) -> bool:
    """The verdict of a matching rule with options: ``allow`` grants, ``deny`` denies, otherwise
    ``grants``; an invalid option (and ``twist``, which we cannot carry out) denies."""
    fields = _option_fields(text)
    for index, field in enumerate(fields):
        name, value = _name_value(field)
        takes_value = _OPTIONS.get(name, False)
        problem = None
        if not name:
            problem = "missing option name"
        elif name not in _OPTIONS:
            problem = f'bad option name: "{name}"'
        elif takes_value is True and not value:
            problem = f'value missing for "{name}" option'
        elif takes_value is False and value:
            problem = f'option "{name}" requires no value'
        elif name in _LAST_OPTIONS and index < len(fields) - 1:
            problem = f'option "{name}" must be at end'
        elif name == "twist":
            problem = 'option "twist" is not supported'
        if problem is not None:
            _logger.warning("%s: %s: access denied", where, problem)
            return False
        if name in ("allow", "deny"):
            return name == "allow"
        _logger.warning('%s: option "%s" is not supported, ignored', where, name)
    return grants
