"""End-to-end: one subscriber sees what one publisher sends."""


async def test_published_event_reaches_subscriber(rest, ws_connect):
    await rest.create("orders")
    sub = await ws_connect()
    ack = await sub.subscribe("orders", request_id="s1")
    assert ack["type"] == "ack" and ack["request_id"] == "s1" and ack["last_seq"] == 0

    pub = await ws_connect()
    reply = await pub.publish("orders", {"n": 1}, request_id="p1")
    assert reply["type"] == "ack" and reply["seq"] == 1 and reply["duplicate"] is False

    (event,) = await sub.events(1)
    assert event["topic"] == "orders" and event["message"]["payload"] == {"n": 1} and event["seq"] == 1
