from shared.status import Outcome, StatusRecord, status_name


def test_record_round_trips_and_keeps_history() -> None:
    record = StatusRecord(
        "import", "inbound/a.csv", Outcome.RECEIVED, "received", correlation={"file": "a.csv"}
    )
    record.advance(Outcome.SENT, "enqueued", message_id="m1")
    record.advance(Outcome.FAILED, "D365 reported errors", status="ProcessedWithErrors")
    again = StatusRecord.from_dict(record.to_dict())
    assert again.outcome is Outcome.FAILED
    assert again.d365 == {"message_id": "m1", "status": "ProcessedWithErrors"}
    assert [h["outcome"] for h in again.history] == ["received", "sent"]
    assert again.outcome.final
    assert not Outcome.SENT.final
    assert status_name("archive/x.csv") == "archive/x.csv.status.json"
