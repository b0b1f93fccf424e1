"""The Witness objects against the fake API: created when missing, written when what they say
changes and not otherwise, Blind while the API server refuses a stream, Silent when nothing
arrives, and a failed write retried at the next round."""

from __future__ import annotations

from fakeapi import serving

from pullwatch.kube.witnessboard import PATH, Report, WitnessBoard, stream_report


class Stream:
    def __init__(self) -> None:
        self.received_at: float | None = None
        self.refused: str | None = None


async def test_witnesses_are_created_then_written_only_when_they_change():
    async with serving() as (fake, api):
        events, now = Stream(), [1_000_000.0]
        board = WitnessBoard(
            api,
            {
                "events": lambda: stream_report([events], "image Events", now[0]),
                "audit": lambda: Report("Disabled", None, "off"),
            },
        )
        await board.publish()
        assert fake.objects[f"{PATH}/events"]["status"]["state"] == "Silent"
        assert fake.objects[f"{PATH}/audit"]["status"] == {"state": "Disabled", "message": "off"}
        patches = fake.count("PATCH")
        await board.publish()
        assert fake.count("PATCH") == patches  # nothing changed, nothing written

        events.received_at = now[0] - 5
        await board.publish()
        status = fake.objects[f"{PATH}/events"]["status"]
        assert status["state"] == "Receiving" and status["lastObservation"].endswith(":00Z")

        events.refused = "watch events"
        await board.publish()
        status = fake.objects[f"{PATH}/events"]["status"]
        assert status["state"] == "Blind" and "watch events" in status["message"]


async def test_a_refused_write_is_tried_again_at_the_next_round():
    async with serving() as (fake, api):
        board = WitnessBoard(api, {"pods": lambda: Report("Disabled", None, "--no-pod-witness")})
        fake.fail("POST", PATH, 403, times=1)
        await board.publish()
        assert f"{PATH}/pods" not in fake.objects and not board.written
        await board.publish()
        assert fake.objects[f"{PATH}/pods"]["status"]["state"] == "Disabled"
