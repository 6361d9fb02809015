"""The small vocabulary every layer shares."""

from __future__ import annotations

from enum import Enum

# S1SP codes and device types are case configuration (remediation.config), never a list here.
FUELS: tuple[str, ...] = ("E", "G")
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
    OUT_OF_SCOPE = "OUT_OF_SCOPE"
    DUPLICATE_CONFLICT = "DUPLICATE_CONFLICT"
    SECURITY_HOLD = "SECURITY_HOLD"
    NO_RDP = "NO_RDP"
    RDP_AMBIGUOUS = "RDP_AMBIGUOUS"
    UNKNOWN_NO = "UNKNOWN_NO"
    PENDING_NO_CHANGE = "PENDING_NO_CHANGE"
    WRONG_NO = "WRONG_NO"
    SLOT_EMPTY = "SLOT_EMPTY"
    KEY_USAGE_MISMATCH = "KEY_USAGE_MISMATCH"
    EXPIRED_OR_REVOKED = "EXPIRED_OR_REVOKED"
    OK = "OK"

    def __str__(self) -> str:
        return self.value


CATEGORIES: tuple[str, ...] = tuple(c.value for c in Category)

# Why a device is in its category (documented in README). Every non-OK finding carries one; OK carries "".
CAUSES_BY_CATEGORY: dict[str, tuple[str, ...]] = {
    "INVALID_INPUT": (
        "invalid_device_id",
        "unconfigured_device_type",
        "invalid_mpxn",
        "undecodable_certificate",
        "invalid_timestamp",
        "s1sp_mismatch",
        "unknown_slot",
        "invalid_other_row",
    ),
    "OUT_OF_SCOPE": ("device_type_without_no_slots",),
    "DUPLICATE_CONFLICT": ("differing_records", "held_by_several_s1sps"),
    "SECURITY_HOLD": ("untrusted_issuer", "policy_not_accepted", "profile_violation"),
    "NO_RDP": ("no_registration", "registration_ended", "registration_not_yet_effective"),
    "RDP_AMBIGUOUS": ("several_registrations", "rejected_rdp_row"),
    "UNKNOWN_NO": ("not_in_registry", "other_fuel_operator"),
    "PENDING_NO_CHANGE": ("slots_hold_incoming_no", "change_of_no_pending"),
    "WRONG_NO": ("previous_no_of_mpxn", "other_no_same_fuel", "other_fuel_no", "non_no_role", "unregistered_entity"),
    "SLOT_EMPTY": ("ds_empty", "ka_empty", "both_empty"),
    "KEY_USAGE_MISMATCH": ("swapped", "ds_slot_holds_ka", "ka_slot_holds_ds"),
    "EXPIRED_OR_REVOKED": ("revoked", "expired"),
    "OK": (),
}
CAUSES: tuple[str, ...] = ("",) + tuple(c for causes in CAUSES_BY_CATEGORY.values() for c in causes)
# Categories in which the registered NO cannot manage the device itself (SRV 6.15.1 fails); EXPIRED_OR_REVOKED
# only with cause `revoked`, or `expired` where the S1SP enforces validity.
LOCKED_OUT_CATEGORIES: tuple[str, ...] = ("WRONG_NO", "SLOT_EMPTY", "KEY_USAGE_MISMATCH")

FINDING_COLUMNS: tuple[str, ...] = (
    "device_id",
    "s1sp",
    "device_type",
    "mpxn",
    "category",
    "cause",
    "no_locked_out",
    "slot_ds_owner",
    "slot_ka_owner",
    "expected_owner",
    "detail",
)

# A planned device's states during apply (the executor's state machine, apply/index.py's ALLOWED): the journal, the
# checkpoint index, status and the reports all speak these.
PENDING, READING, WRITING, CONFIRMING = "pending", "reading", "writing", "confirming"
DONE, NOOP, DRIFTED, FAILED = "done", "noop", "drifted", "failed"
# Found at target when a run is resumed, with no write by this run in the journal: an earlier process of the run may
# have written it (its journal lines lost to a power cut, or cut by someone), so it is not `noop` ("not written by
# this run"): it is counted apart, and rollback offers it as possibly written.
AT_TARGET_ON_RESUME = "at_target_on_resume"
IN_FLIGHT = (READING, WRITING, CONFIRMING)
OPEN_STATES = (PENDING, *IN_FLIGHT)
FINAL_STATES = (DONE, NOOP, AT_TARGET_ON_RESUME, DRIFTED, FAILED)
STATES = (*OPEN_STATES, *FINAL_STATES)

# S1SP requests apply makes per planned device: read, conditional write, read back (estimates and costs use it).
REQUESTS_PER_DEVICE = 3
