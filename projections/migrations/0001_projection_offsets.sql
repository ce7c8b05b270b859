-- Where each projector resumes: the next offset to consume per (projection, topic, partition).
-- A projector writes its read-model changes and these rows in one transaction, and seeks to
-- next_offset on assignment, never to the consumer group's committed offsets.
CREATE TABLE projection_offsets (
    projection  text        NOT NULL,
    topic       text        NOT NULL,
    partition   int         NOT NULL CHECK (partition >= 0),
    next_offset bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, topic, partition)
);

COMMENT ON TABLE projection_offsets IS
    'next Kafka offset to consume per projection, topic and partition; written in the same '
    'transaction as the read-model changes of the batch it ends';
COMMENT ON COLUMN projection_offsets.projection IS 'projection name, as in constellation projector --projection';
COMMENT ON COLUMN projection_offsets.next_offset IS 'offset of the first record not yet applied';
