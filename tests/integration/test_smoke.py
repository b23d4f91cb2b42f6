from tests.kit import KafkaReader, new_topic


def test_lines_reach_kafka(make_agent, kafka, logdir):
    topic = new_topic()
    log = logdir / "app.log"
    log.write_text("before start\n")
    agent = make_agent(files=[{"path": str(log), "topic": topic, "start": "beginning"}])
    with open(log, "a") as f:
        for i in range(100):
            f.write(f"line {i}\n")
    with KafkaReader(kafka, topic) as reader:
        reader.read(101)
        data = reader.data()
    assert data == ["before start"] + [f"line {i}" for i in range(100)]
    assert agent.stop() == 0
