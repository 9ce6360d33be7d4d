"""Continuous-mode commands: start, stop or status on /request/continuous[/<name>], answered at once
(README, "Continuous mode").

Built beside the classifier (build.py) and started with it, like the status responder: a command
flips the state of the classifier's continuous loop and never waits on a frame, so it is answered
on the transport's thread. Once the classifier is stopping, every command is answered BUSY: a start
then would leave a loop reported running that no thread runs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fieldlens_classifier.routing import paired_reply, reply_for
from fieldlens_core import topics
from fieldlens_core.bus import Bus, Message
from fieldlens_core.errors import BusyError, FieldlensError
from fieldlens_core.messages import ContinuousCommand, ContinuousResponse, ErrorInfo, parse_payload, salvage_request_id

if TYPE_CHECKING:
    from fieldlens_classifier.service import Classifier

log = logging.getLogger(__name__)


class ContinuousCommands:
    """Answers continuous-mode commands for one classifier."""

    def __init__(self, classifier: Classifier, bus: Bus) -> None:
        self._classifier = classifier
        self._bus = bus

    def start(self) -> None:
        for request_topic, response_topic in self._classifier.config.continuous_routes.items():
            self._bus.subscribe(request_topic, self.on_command)
            log.info("continuous-mode commands on %s, answered on %s", request_topic, response_topic)

    def on_command(self, message: Message) -> None:
        if message.retained:
            log.warning("ignored a retained message on %s: retained messages are never commands", message.topic)
            return
        classifier = self._classifier
        config, loop = classifier.config, classifier.continuous
        reply = paired_reply(message, config.continuous_routes, topics.continuous_response_topic(config.name))
        request_id, note = salvage_request_id(message.payload), None
        try:
            command = parse_payload(message.payload, ContinuousCommand, config.max_payload_bytes)
            request_id, note = command.request_id, command.message
            reply = reply_for(message, command.reply_topic, reply, config)
            if classifier.stopping:
                raise BusyError("the classifier is shutting down")
            if command.action == "start":
                loop.start(command.fps)
            elif command.action == "stop":
                loop.stop()
            response = ContinuousResponse(
                request_id=request_id, thing=config.thing_name, continuous=loop.status(), message=note
            )
        except FieldlensError as exc:
            log.info("rejected continuous-mode command %s: %s %s", request_id, exc.code, exc.message)
            error = ErrorInfo(code=exc.code, message=exc.message)
            response = ContinuousResponse(request_id=request_id, thing=config.thing_name, message=note, error=error)
        try:
            self._bus.publish(reply.topic, response.to_payload(), reply.correlation_data)
        except Exception:
            log.exception("could not publish the answer to command %s", request_id)
