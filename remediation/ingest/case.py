"""A case's inputs, read: configuration, certificates, registry, extracts and RDP, with their files' SHA-256 hashed
in the background while the rest is read (detect and plan seal them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from remediation.certificates import CertificateCatalog
from remediation.config import CaseConfig
from remediation.evidence.hashing import BackgroundHashes, sha256_file
from remediation.ingest.extracts import DeviceRules, ExtractRead, read_extracts
from remediation.ingest.pki import load_org_cas, load_orl
from remediation.ingest.rdp import RdpRead, read_rdp
from remediation.ingest.registry import Registry, load_registry
from remediation.memory import release_memory
from remediation.progress import NO_PROGRESS, StageProgress
from remediation.registrations import RdpIndex


@dataclass
class CaseData:
    config: CaseConfig
    as_of: date
    catalog: CertificateCatalog
    registry: Registry
    extracts: ExtractRead
    rdp: RdpRead  # its rows already indexed (None)
    rdp_index: RdpIndex | None  # handed over to detection (then None)
    hashes: BackgroundHashes | None = None

    def sha256(self, path) -> str:
        return self.hashes.get(path) if self.hashes is not None else sha256_file(path)


def load_case_data(config: CaseConfig, as_of: date | None = None, progress: StageProgress = NO_PROGRESS) -> CaseData:
    as_of = as_of or config.as_of or date.today()
    progress.stage("loading PKI, ORL and NO registry")
    hashes = BackgroundHashes([*config.input_files, *config.config_files])
    catalog = CertificateCatalog(
        load_org_cas(config.org_ca_paths), load_orl(config.orl_path), config.accepted_policy_oids
    )
    registry = load_registry(config.registry_path, catalog)
    # RDP first, indexed and its rows freed at once: the rows never share memory with the device records.
    rdp = read_rdp(config.rdp, (config.policy.mprn_min_length, config.policy.mprn_max_length), progress)
    rdp_index = RdpIndex.build(rdp.registrations, as_of, config.policy)
    rdp.registrations = None
    release_memory()
    extracts = read_extracts(config.extracts, catalog, progress, DeviceRules.of(config))
    release_memory()
    return CaseData(config, as_of, catalog, registry, extracts, rdp, rdp_index, hashes)
