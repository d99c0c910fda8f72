import asyncio

from channels.layers import get_channel_layer


async def test_a_consumer_idle_longer_than_a_blocking_pop_still_gets_its_messages():
    """Regression: with redis-py's default 5 s read timeout an idle receive() raised TimeoutError."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("idle-test", channel)
    receive = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(6.5)
    assert not receive.done()
    await layer.group_send("idle-test", {"type": "ping", "n": 1})
    assert await asyncio.wait_for(receive, 5) == {"type": "ping", "n": 1}
    await layer.group_discard("idle-test", channel)
