"""The classifier component: answers classify requests from MQTT with structured predictions."""
