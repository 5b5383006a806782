"""From samples to rows: wall-clock windows, raw readings, deadband, alarms and calculated tags.

Stands on the ground floor and the configuration models; knows nothing of batches, the buffer or MQTT (the
batcher, one floor up, turns its rows into frames).
"""
