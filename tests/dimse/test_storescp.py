"""The Storage SCP (our acceptor role): negotiation without a network, then real peers.

Senders are DCMTK's ``storescu``/``echoscu`` and pynetdicom, two independent
implementations, plus our own requestor for the association-level limits
(busy, idle, release, ARTIM) where the exact outcome must be observed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import (
    MPEG2MPML,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
)
from pynetdicom import AE

from gateway.dicom.part10 import read_part10
from gateway.dimse import pdu as P
from gateway.dimse.acceptor import ACCEPTED_SYNTAXES, AcceptorSettings, negotiate
from gateway.dimse.contexts import QUERY, STUDY_ROOT_FIND, VERIFICATION
from gateway.dimse.echoscu import c_echo
from gateway.dimse.errors import AssociationAborted, AssociationRefused, DimseError
from gateway.dimse.messages import Command
from gateway.dimse.requestor import IMPLEMENTATION_CLASS_UID, Association, Peer, associate
from gateway.dimse.storescp import StoreSCP
from gateway.dimse.upper_layer import State
from tests.dimse.dimse_support import CALLING_AET, TIMEOUTS, run
from tests.peers.dcmtk import dcmtk_available, echoscu, storescu

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
AET = "GATEWAY"

needs_dcmtk = pytest.mark.skipif(
    not dcmtk_available("storescu", "echoscu"), reason="DCMTK is not installed"
)


# --------------------------------------------------------------------------- helpers


@dataclasses.dataclass
class Received:
    calling_aet: str
    command: Command
    transfer_syntax: str
    dataset: bytes


class Recorder:
    """A StoreHandler that keeps what it got and answers ``status`` (or raises)."""

    def __init__(self, status: int = 0x0000, fail: bool = False) -> None:
        self.received: list[Received] = []
        self.status = status
        self.fail = fail

    async def __call__(self, calling_aet: str, command: Command, ts: str, dataset: bytes) -> int:
        self.received.append(Received(calling_aet, command, ts, dataset))
        if self.fail:
            raise RuntimeError("handler bug")
        return self.status


def file_dataset(path: Path) -> tuple[str, bytes]:
    """(transfer syntax, data set bytes after the File Meta) of a Part 10 file."""
    part10 = read_part10(path.read_bytes())
    return part10.transfer_syntax_uid, bytes(part10.data[part10.offset :])


def scp(handler: Recorder, **options: Any) -> StoreSCP:
    return StoreSCP(AET, "127.0.0.1", 0, handler, **options)


def peer(server: StoreSCP) -> Peer:
    return Peer(AET, "127.0.0.1", server.port)


def rq(called: str = AET, calling: str = "PACS", **changes: Any) -> P.AssociateRequest:
    request = P.AssociateRequest(
        called_aet=called,
        calling_aet=calling,
        user_information=P.UserInformation(max_length=16384),
        contexts=(
            P.PresentationContextRQ(1, CT, (MPEG2MPML, JPEG2000Lossless, ExplicitVRLittleEndian)),
            P.PresentationContextRQ(3, VERIFICATION, (ImplicitVRLittleEndian,)),
            P.PresentationContextRQ(5, STUDY_ROOT_FIND, (ImplicitVRLittleEndian,)),
            P.PresentationContextRQ(7, MR, (MPEG2MPML,)),
            P.PresentationContextRQ(9, VERIFICATION, (JPEG2000Lossless,)),
        ),
    )
    return dataclasses.replace(request, **changes)


# --------------------------------------------------------------------------- negotiation


def test_negotiate_takes_storage_and_verification_with_the_first_syntax_we_accept() -> None:
    ac = negotiate(rq(), AcceptorSettings(AET))
    assert isinstance(ac, P.AssociateAccept)
    results = {c.context_id: (c.result, c.transfer_syntax) for c in ac.contexts}
    assert results[1] == (P.ACCEPTANCE, JPEG2000Lossless)  # proposer's order, MPEG2 skipped
    assert results[3] == (P.ACCEPTANCE, ImplicitVRLittleEndian)
    assert results[5][0] == P.ABSTRACT_SYNTAX_NOT_SUPPORTED
    assert results[7][0] == P.TRANSFER_SYNTAXES_NOT_SUPPORTED
    assert results[9][0] == P.TRANSFER_SYNTAXES_NOT_SUPPORTED  # Verification: uncompressed
    assert (ac.called_aet, ac.calling_aet) == (AET, "PACS")
    assert ac.user_information.max_length == 1048576
    assert ac.user_information.implementation_class_uid == IMPLEMENTATION_CLASS_UID
    # The answer survives a round trip through the PDU codec.
    assert P.PduParser().feed(ac.encode()) == [ac]


def test_negotiate_honours_a_restricted_syntax_set() -> None:
    settings = AcceptorSettings(AET, transfer_syntaxes=(ExplicitVRLittleEndian,))
    ac = negotiate(rq(), settings)
    assert isinstance(ac, P.AssociateAccept)
    assert ac.contexts[0].transfer_syntax == ExplicitVRLittleEndian
    assert JPEG2000Lossless in ACCEPTED_SYNTAXES


@pytest.mark.parametrize(
    ("request_", "settings", "expected"),
    [
        pytest.param(rq(called="OTHER"), AcceptorSettings(AET), (1, 1, 7), id="called-aet"),
        pytest.param(
            rq(calling="STRANGER"),
            AcceptorSettings(AET, calling_aets=frozenset({"PACS2"})),
            (1, 1, 3),
            id="calling-aet",
        ),
        pytest.param(
            rq(application_context="1.2.3"), AcceptorSettings(AET), (1, 1, 2), id="app-context"
        ),
        pytest.param(rq(protocol_version=2), AcceptorSettings(AET), (1, 2, 2), id="version"),
    ],
)
def test_negotiate_rejects(
    request_: P.AssociateRequest, settings: AcceptorSettings, expected: tuple[int, int, int]
) -> None:
    rj = negotiate(request_, settings)
    assert isinstance(rj, P.AssociateReject)
    assert (rj.result, rj.source, rj.reason) == expected


def test_negotiate_busy_is_transient_local_limit_exceeded() -> None:
    rj = negotiate(rq(), AcceptorSettings(AET), busy=True)
    assert rj == P.AssociateReject(2, 3, 2)
    assert "local limit exceeded" in rj.describe()


def test_negotiate_may_accept_any_called_aet() -> None:
    ac = negotiate(rq(called="WHATEVER"), AcceptorSettings(AET, accept_any_called_aet=True))
    assert isinstance(ac, P.AssociateAccept)
    assert ac.called_aet == "WHATEVER"


# --------------------------------------------------------------------------- DCMTK


@needs_dcmtk
def test_storescu_sends_several_files_on_one_association(sample_manifest: Any) -> None:
    instances = [
        *next(iter(sample_manifest.series().values())),  # the CT series
        *(i for i in sample_manifest if i.number_of_frames > 1),  # multi-frame SC
        *[i for i in sample_manifest if i.modality == "MR"][:2],
    ]
    files = [i.path for i in instances]
    recorder = Recorder()

    async def main() -> None:
        async with scp(recorder) as server:
            outcome = await asyncio.to_thread(storescu, "127.0.0.1", server.port, AET, files)
            assert outcome.stored == files, outcome.output
            assert outcome.output.count("Association Accepted") == 1

    run(main())
    assert [r.command["AffectedSOPInstanceUID"] for r in recorder.received] == [
        i.sop_uid for i in instances
    ]
    for inst, got in zip(instances, recorder.received, strict=True):
        ts, data = file_dataset(inst.path)
        assert got.calling_aet == "DCMTKSCU"
        assert got.command["AffectedSOPClassUID"] == inst.sop_class_uid
        assert (got.transfer_syntax, got.dataset) == (ts, data)


@needs_dcmtk
def test_echoscu_and_called_aet_check() -> None:
    async def main() -> None:
        async with scp(Recorder()) as server:
            ok = await asyncio.to_thread(echoscu, "127.0.0.1", server.port, AET)
            assert ok.returncode == 0, ok.stdout + ok.stderr
            wrong = await asyncio.to_thread(echoscu, "127.0.0.1", server.port, "NOTUS")
            assert wrong.returncode != 0
            assert "Called AE Title Not Recognized" in wrong.stdout + wrong.stderr
        async with scp(Recorder(), accept_any_called_aet=True) as server:
            anything = await asyncio.to_thread(echoscu, "127.0.0.1", server.port, "NOTUS")
            assert anything.returncode == 0

    run(main())


# --------------------------------------------------------------------------- pynetdicom


def _pynetdicom_store(port: int, files: list[Path]) -> tuple[dict[str, int], list[int]]:
    """Propose a mix of contexts, send ``files``; (context results, statuses)."""
    ae = AE("PYNETSCU")
    ae.add_requested_context(CT, [ExplicitVRLittleEndian])
    ae.add_requested_context(MR, [MPEG2MPML])  # no syntax we take: reason 4
    ae.add_requested_context(STUDY_ROOT_FIND, [ImplicitVRLittleEndian])  # not storage: 3
    assoc = ae.associate("127.0.0.1", port, ae_title=AET)
    assert assoc.is_established
    try:
        results = {
            str(c.abstract_syntax): int(c.result or 0)
            for c in [*assoc.accepted_contexts, *assoc.rejected_contexts]
        }
        statuses = [int(assoc.send_c_store(f).Status) for f in files]
    finally:
        assoc.release()
    return results, statuses


def test_pynetdicom_stores_and_unsupported_contexts_are_rejected(sample_manifest: Any) -> None:
    ct = next(iter(sample_manifest.series().values()))[:3]
    recorder = Recorder()

    async def main() -> tuple[dict[str, int], list[int]]:
        async with scp(recorder) as server:
            return await asyncio.to_thread(_pynetdicom_store, server.port, [i.path for i in ct])

    results, statuses = run(main())
    assert results == {
        CT: P.ACCEPTANCE,
        MR: P.TRANSFER_SYNTAXES_NOT_SUPPORTED,
        STUDY_ROOT_FIND: P.ABSTRACT_SYNTAX_NOT_SUPPORTED,
    }
    assert statuses == [0, 0, 0]
    assert [r.calling_aet for r in recorder.received] == ["PYNETSCU"] * 3
    assert [r.dataset for r in recorder.received] == [file_dataset(i.path)[1] for i in ct]


@pytest.mark.parametrize(
    ("recorder", "status"),
    [
        pytest.param(Recorder(status=0xA700), 0xA700, id="handler-status"),
        pytest.param(Recorder(fail=True), 0x0110, id="handler-raises"),
    ],
)
def test_handler_outcome_is_the_status_the_sender_sees(
    sample_manifest: Any, recorder: Recorder, status: int
) -> None:
    ct = next(iter(sample_manifest.series().values()))[:2]

    async def main() -> list[int]:
        async with scp(recorder) as server:
            _, statuses = await asyncio.to_thread(
                _pynetdicom_store, server.port, [i.path for i in ct]
            )
            return statuses

    # A failing handler does not kill the association: the second store is answered too.
    assert run(main()) == [status, status]


# --------------------------------------------------------------------------- limits


async def _connect(server: StoreSCP) -> Association:
    return await associate(peer(server), CALLING_AET, QUERY, timeouts=TIMEOUTS)


def test_echo_and_release_with_our_requestor() -> None:
    async def main() -> None:
        async with scp(Recorder()) as server:
            assoc = await _connect(server)
            assert assoc.has_context(VERIFICATION)
            assert not assoc.has_context(STUDY_ROOT_FIND)
            # Our side of the accepted socket is tuned like the requestor's.
            (accepted,) = server.server.associations
            assert accepted.protocol.transport is not None
            sock = accepted.protocol.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            assert accepted.calling_aet == CALLING_AET
            for _ in range(3):
                await c_echo(assoc, timeout=5)
            await assoc.release()
            assert assoc.machine.state is State.CLOSED
            await asyncio.sleep(0.05)
            assert not server.server.associations

    run(main())


def test_beyond_max_associations_is_rejected_transient() -> None:
    async def main() -> None:
        async with scp(Recorder(), max_associations=1) as server:
            first = await _connect(server)
            with pytest.raises(AssociationRefused) as refused:
                await _connect(server)
            assert refused.value.transient
            assert "local limit exceeded" in str(refused.value)
            await first.release()
            await asyncio.sleep(0.05)
            again = await _connect(server)  # the slot is free again
            await again.release()

    run(main())


def test_idle_association_is_aborted() -> None:
    async def main() -> None:
        async with scp(Recorder(), idle_timeout=0.2) as server:
            assoc = await _connect(server)
            await c_echo(assoc, timeout=5)
            await asyncio.sleep(0.6)
            assert not assoc.is_established
            with pytest.raises(AssociationAborted):
                await c_echo(assoc, timeout=5)
            assert not server.server.associations

    run(main())


def test_connection_without_association_request_is_closed() -> None:
    async def main() -> bytes:
        async with scp(Recorder(), request_timeout=0.2) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            started = time.monotonic()
            data = await asyncio.wait_for(reader.read(), 5)  # EOF when the SCP closes
            assert time.monotonic() - started < 2
            writer.close()
            return data

    assert run(main()) == b""


def test_garbage_is_answered_with_abort() -> None:
    async def main() -> bytes:
        async with scp(Recorder()) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"\x09\x00\x00\x00\x00\x04junk")  # PDU type 9 does not exist
            data = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return data

    # PS3.8 9.3.8: A-ABORT from the service provider, reason unrecognized PDU.
    assert run(main()) == P.Abort(P.ABORT_SOURCE_PROVIDER, P.ABORT_REASON_UNRECOGNIZED_PDU).encode()


def test_close_aborts_open_associations_and_stops_listening() -> None:
    async def main() -> None:
        server = scp(Recorder())
        await server.start()
        assoc = await _connect(server)
        await server.close()
        await asyncio.sleep(0.05)
        assert not assoc.is_established
        with pytest.raises(DimseError):
            await _connect(server)
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", server.port)) != 0

    run(main())
