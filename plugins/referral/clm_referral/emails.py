"""Email normalisation for self-referral checks: one mailbox, whatever way it is spelled.

Why: the cheapest way to farm referral rewards is to refer yourself under another spelling
of your own address. ``Ada.Lovelace+ref@GMail.com`` and ``adalovelace@googlemail.com`` reach
the same inbox, so they count as the same person.
"""

from __future__ import annotations

#: Providers that ignore dots in the local part, mapped to their canonical domain.
DOTLESS_DOMAINS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


def normalise_email(address: str) -> str:
    """The canonical mailbox of an address.

    - case is ignored everywhere (mail providers treat local parts case-insensitively);
    - plus-addressing is dropped for every domain (``ada+promo@x.org`` -> ``ada@x.org``);
    - dots are dropped from the local part at Gmail, and ``googlemail.com`` is ``gmail.com``.
    """
    text = address.strip().lower()
    local, at, domain = text.rpartition("@")
    if not at or not local:
        return text
    local = local.split("+", 1)[0]
    if domain in DOTLESS_DOMAINS:
        domain = DOTLESS_DOMAINS[domain]
        local = local.replace(".", "")
    return f"{local}@{domain}"
