"""Sources: the synthetic line, folders, video files/cameras with reconnect, CSV sensor replay."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from connectors.base import SourceError
from connectors.factory import open_source
from connectors.sensors import Windower
from tests.helpers.waiting import wait_for


def test_synthetic_line_samples_are_stamped_and_paced():
    source = open_source("synth:line?size=64&defect_rate=0.5&seed=3&fps=40", "line-1")
    before = dt.datetime.now(dt.UTC)
    start = time.monotonic()
    samples = [source.read() for _ in range(9)]
    elapsed = time.monotonic() - start
    assert 0.15 <= elapsed <= 1.0  # 8 periods of 25 ms
    assert all(s.source_id == "line-1" and s.payload.shape == (64, 64) for s in samples)
    assert all(before <= s.t_capture <= dt.datetime.now(dt.UTC) for s in samples)
    assert any(s.meta["defect"] for s in samples) and source.status()["frames_in"] == 9


@pytest.mark.parametrize(
    "url,message",
    [
        ("synth:line?speed=3", "unknown option 'speed'"),
        ("synth:line?fps=fast", "option 'fps' has value 'fast'. Not a valid float."),
        ("synth:line?kinds=rust", "unknown defect kind 'rust'"),
        ("synth:belt", "use synth:line"),
        ("camera:front", "camera index must be a number"),
        ("folder:/does/not/exist", "does not exist"),
        ("ftp://host/x", "unknown source"),
    ],
)
def test_bad_source_strings_are_named(url, message):
    with pytest.raises(SourceError, match=message):
        open_source(url)


def test_folder_processes_each_image_once_across_restarts(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((8, 8), i * 50, np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    os.utime(tmp_path / "broken.png", (time.time() - 10, time.time() - 10))  # long finished: truly broken
    source = open_source(f"folder:{tmp_path}?poll=0.05")
    got = [source.read(0.5) for _ in range(3)]
    assert [s.meta["file"] for s in got] == ["0.png", "1.png", "2.png"]
    assert source.read(0.3) is None and source.errors == 1 and "broken.png" in source.last_error
    restarted = open_source(f"folder:{tmp_path}?poll=0.05")
    assert restarted.read(0.2) is None  # nothing repeated after a restart
    cv2.imwrite(str(tmp_path / "new.png"), np.zeros((8, 8), np.uint8))
    assert restarted.read(1.0).meta["file"] == "new.png"


def test_a_half_written_image_is_read_once_it_is_complete_not_lost(tmp_path):
    """A camera or PLC saving into the folder: the scan can meet a file before its last byte. It is
    retried, not marked as seen and skipped; it is given up on only after ``settle`` seconds unchanged."""
    image = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64).astype(np.uint8)
    ok, data = cv2.imencode(".png", image)
    (tmp_path / "part.png").write_bytes(data.tobytes()[: len(data) // 2])
    source = open_source(f"folder:{tmp_path}?poll=0.05&settle=5")
    assert source.read(0.3) is None and source.errors == 0 and "part.png" not in source.seen
    (tmp_path / "part.png").write_bytes(data.tobytes())  # the writer finishes
    sample = source.read(1.0)
    assert sample.meta["file"] == "part.png" and np.array_equal(sample.payload, image) and source.errors == 0
    # a truncated file that stopped changing is given up on, named
    (tmp_path / "cut.png").write_bytes(data.tobytes()[:100])
    quick = open_source(f"folder:{tmp_path}?poll=0.05&settle=0.2", "quick")
    assert quick.read(1.0) is None and quick.errors == 1 and "cut.png" in quick.last_error


def test_a_folder_remembers_by_appending_and_forgets_files_that_left(tmp_path):
    """Each image read appends its name (no rewrite of the whole set per image); names of files
    moved away are forgotten, so memory follows the folder, not its history; restarts repeat nothing."""
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.zeros((8, 8), np.uint8))
    source = open_source(f"folder:{tmp_path}?poll=0.05")
    assert [source.read(0.5).meta["file"] for _ in range(5)] == [f"{i}.png" for i in range(5)]
    assert (tmp_path / ".appliance-seen.json.log").read_text().split() == [f"{i}.png" for i in range(5)]
    for i in range(3):
        (tmp_path / f"{i}.png").unlink()  # the plant moves processed parts away
    assert source.read(0.2) is None and source.seen == {"3.png", "4.png"}
    restarted = open_source(f"folder:{tmp_path}?poll=0.05")
    assert restarted.read(0.2) is None


def write_video(path: Path, frames: int = 6) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (32, 32))
    for i in range(frames):
        writer.write(np.full((32, 32, 3), i * 30 % 256, np.uint8))
    writer.release()


def test_video_file_frames_arrive_in_order(tmp_path):
    write_video(tmp_path / "v.avi")
    source = open_source(f"file:{tmp_path / 'v.avi'}")
    try:
        frames = [source.read(2.0) for _ in range(6)]
        assert all(f is not None for f in frames)
        levels = [int(f.payload.mean()) for f in frames]
        assert levels == sorted(levels) and source.frames_dropped == 0
    finally:
        source.close()


def test_a_recording_replays_at_line_speed_like_a_camera(tmp_path):
    """``fps`` paces a file as a camera delivers frames: about that many a second, looping; a
    consumer that stops reading loses what overflows the camera-like buffer, counted."""
    write_video(tmp_path / "v.avi", frames=10)
    source = open_source(f"file:{tmp_path / 'v.avi'}?fps=20&loop=1")
    try:
        start = time.monotonic()
        got = [source.read(2.0) for _ in range(11)]
        elapsed = time.monotonic() - start
        assert all(g is not None for g in got) and 0.3 <= elapsed <= 3.0  # 10 periods of 50 ms after the first
        time.sleep(1.0)  # the line stalls: 20 frames arrive, 4 fit the buffer
        assert wait_for(lambda: source.frames_dropped >= 10)
        assert source.read(1.0) is not None
    finally:
        source.close()


def test_camera_on_a_file_that_disappears_and_reappears_reconnects(tmp_path):
    video = tmp_path / "cam.avi"
    write_video(video)
    source = open_source(f"file:{video}?live=1&backoff=0.05&max_backoff=0.2", "cam")
    try:
        assert wait_for(lambda: source.read(0.1) is not None)
        assert wait_for(lambda: source.state == "online")  # between replays of the short file it is reconnecting
        hidden = tmp_path / "away.avi"
        video.rename(hidden)
        assert wait_for(lambda: source.state == "reconnecting" and source.errors > 0)
        assert "cannot open" in source.status()["last_error"]
        reconnects = source.reconnects
        hidden.rename(video)
        assert wait_for(lambda: source.state == "online" and source.reconnects > reconnects)
        assert wait_for(lambda: source.read(0.1) is not None)
    finally:
        source.close()
    assert source.status()["state"] == "stopped"


def test_dead_camera_fails_after_its_retries_and_never_falls_back(tmp_path):
    source = open_source(f"file:{tmp_path / 'none.avi'}?backoff=0.01&max_retries=3")
    assert wait_for(lambda: source.state == "failed")
    assert source.read(0.05) is None and source.errors == 3
    source.close()


def test_windower_assembles_channels_by_hop():
    w = Windower(channels=2, length=4, hop=2)
    out = [w.push([i, -i]) for i in range(8)]
    windows = [o for o in out if o is not None]
    assert len(windows) == 3 and windows[0].shape == (2, 4)
    np.testing.assert_array_equal(windows[1][0], [2, 3, 4, 5])
    with pytest.raises(SourceError, match="expects 2 channels"):
        w.push([1, 2, 3])


def test_csv_sensor_replay_into_windows(tmp_path):
    rows = ["a,b,c"] + [f"{i},{2 * i},{3 * i}" for i in range(10)] + ["x,1,2"] + [f"{i},0,0" for i in range(10, 16)]
    (tmp_path / "s.csv").write_text("\n".join(rows) + "\n")
    source = open_source(f"csv:{tmp_path / 's.csv'}?window=8&hop=4")
    windows = []
    while (s := source.read(0.2)) is not None:
        windows.append(s)
    assert [w.payload.shape for w in windows] == [(3, 8)] * 3
    assert windows[0].meta["channels"] == ["a", "b", "c"]
    assert source.errors == 1 and "line 12" in source.last_error and source.state == "stopped"


def test_mqtt_sensor_readings_become_windows_and_survive_a_broker_restart(tmp_path):
    import json
    import uuid

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from tests.helpers.broker import Broker

    broker = Broker(tmp_path)
    broker.start()
    topic = f"plant/{uuid.uuid4().hex[:6]}/vibration"
    source = open_source(f"mqtt://127.0.0.1:{broker.port}/{topic}?window=4&hop=2&channels=x,y", "vib")
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    try:
        assert wait_for(lambda: source.state == "online")
        for i in range(6):
            pub.publish(topic, json.dumps({"x": i, "y": -i, "z": 99}), qos=1).wait_for_publish(2)
        pub.publish(topic, b"{broken", qos=1).wait_for_publish(2)
        pub.publish(topic, json.dumps({"x": 1}), qos=1).wait_for_publish(2)
        windows = [source.read(2.0) for _ in range(2)]
        assert all(w is not None and w.payload.shape == (2, 4) for w in windows)
        np.testing.assert_array_equal(windows[0].payload[0], [0, 1, 2, 3])
        assert wait_for(lambda: source.errors == 2) and "lacks channel" in source.last_error
        pub.loop_stop()
        broker.stop()
        assert wait_for(lambda: source.state == "reconnecting")
        broker.start()
        assert wait_for(lambda: source.state == "online", timeout=15)  # resubscribed in on_connect
        pub.reconnect()
        pub.loop_start()
        for i in range(4):
            pub.publish(topic, json.dumps({"values": [i, i]}), qos=1).wait_for_publish(2)
        assert source.read(3.0) is not None
    finally:
        pub.loop_stop()
        source.close()
        broker.stop()


def test_modbus_registers_are_polled_into_windows_and_outages_are_reported(tmp_path):
    import asyncio
    import socket
    import threading

    from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
    from pymodbus.server import ModbusTcpServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    block = ModbusSequentialDataBlock(1, list(range(200)))
    context = ModbusServerContext(devices=ModbusDeviceContext(hr=block), single=True)
    loop = asyncio.new_event_loop()
    holder: dict = {}

    async def serve() -> None:
        holder["server"] = ModbusTcpServer(context, address=("127.0.0.1", port))
        await holder["server"].serve_forever()

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    assert wait_for(lambda: "server" in holder)
    source = open_source(f"modbus://127.0.0.1:{port}/100?count=3&interval=0.02&window=4&hop=4&scale=0.5&backoff=0.05")
    try:
        window = source.read(5.0)
        assert window is not None and window.payload.shape == (3, 4)
        np.testing.assert_allclose(window.payload[:, 0], [50.0, 50.5, 51.0])  # registers 100..102, scaled
        assert source.state == "online"
        asyncio.run_coroutine_threadsafe(holder["server"].shutdown(), loop).result(5)
        assert wait_for(lambda: source.state == "reconnecting" and source.errors > 0, timeout=15)
    finally:
        source.close()
    with pytest.raises(SourceError, match="first register"):
        open_source("modbus://127.0.0.1:5020/holding")
