"""Rendered frames, cached beside their instance (issue 5 item 4).

A viewer asks for the same thumbnails and previews again and again; a JPEG
costs a decode and an encode (tens of milliseconds for J2K), a cache read a
fraction of one.  The key is a hash of the frame and every rendering
parameter, so a different window or size is a different entry.  Entries go
with their instance when the cache evicts it.
"""

from __future__ import annotations

import hashlib

from gateway.dicom.render import RenderParams, render_frame
from gateway.services.errors import NotAcceptable
from gateway.services.retrieve import InstanceData, Retriever
from gateway.services.workers import Workers


def render_key(frame_index: int, params: RenderParams) -> str:
    digest = hashlib.sha1(f"{frame_index}|{params!r}".encode(), usedforsecurity=False)
    return "r" + digest.hexdigest()[:24]


async def cached_render(
    retriever: Retriever, instance: InstanceData, frame_index: int, params: RenderParams
) -> bytes | None:
    """The frame as rendered before, without reading the instance; None if it was not."""
    if retriever.cache is None or instance.path is None:
        return None
    return await retriever.cache.get_derived(
        instance.sop_instance_uid, render_key(frame_index, params)
    )


async def rendered_frame(
    retriever: Retriever,
    workers: Workers,
    instance: InstanceData,
    data: bytes,
    frame_index: int,
    params: RenderParams,
) -> bytes:
    """One frame rendered per ``params``; from the cache when it was rendered before."""
    cache = retriever.cache if instance.path is not None else None
    key = render_key(frame_index, params)
    if cache is not None:
        hit = await cache.get_derived(instance.sop_instance_uid, key)
        if hit is not None:
            return hit
    try:
        image = await workers.run(render_frame, data, frame_index, params)
    except ValueError as exc:  # a colour space or codec we cannot render
        raise NotAcceptable(f"cannot render {instance.sop_instance_uid}: {exc}") from exc
    if cache is not None:
        await cache.put_derived(instance.sop_instance_uid, key, image)
    return image
