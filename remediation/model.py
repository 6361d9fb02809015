"""The small vocabulary every layer shares."""

from __future__ import annotations

from enum import Enum

S1SPS: tuple[str, ...] = ("MOC", "FOC", "IOC")
DEVICE_TYPES: tuple[str, ...] = ("ESME", "GSME")
FUELS: tuple[str, ...] = ("E", "G")
# Compact tables carry a device type and a fuel as the same small code (an ESME is on electricity, a GSME on gas),
# so a device's code is its registration's fuel code; -1 is unknown.
DEVICE_TYPE_CODES = {t: i for i, t in enumerate(DEVICE_TYPES)}
FUEL_CODES = {f: i for i, f in enumerate(FUELS)}
SLOTS: tuple[str, ...] = ("NO_DS", "NO_KA")

# GBCS RemotePartyRole of a Network Operator, carried as the subject OU in two hex digits.
ROLE_NETWORK_OPERATOR = 0x03
ROLE_NAMES = {
    0x01: "recovery",
    0x02: "supplier",
    0x03: "networkOperator",
    0x04: "accessControlBroker",
    0x05: "transitionalCoS",
    0x06: "wanProvider",
    0x07: "issuingAuthority",
    0x7F: "other",
}

# Certificate id used in the compact device tables for an empty slot.
EMPTY_SLOT = -1


class Category(str, Enum):
    """Finding categories, declared in the contract's order of precedence (first wins)."""

    INVALID_INPUT = "INVALID_INPUT"
    DUPLICATE_CONFLICT = "DUPLICATE_CONFLICT"
    NO_RDP = "NO_RDP"
    RDP_AMBIGUOUS = "RDP_AMBIGUOUS"
    UNKNOWN_NO = "UNKNOWN_NO"
    WRONG_NO = "WRONG_NO"
    SLOT_EMPTY = "SLOT_EMPTY"
    KEY_USAGE_MISMATCH = "KEY_USAGE_MISMATCH"
    EXPIRED_OR_REVOKED = "EXPIRED_OR_REVOKED"
    OK = "OK"

    def __str__(self) -> str:
        return self.value


CATEGORIES: tuple[str, ...] = tuple(c.value for c in Category)

FINDING_COLUMNS: tuple[str, ...] = (
    "device_id",
    "s1sp",
    "device_type",
    "mpxn",
    "category",
    "slot_ds_owner",
    "slot_ka_owner",
    "expected_owner",
    "detail",
)
