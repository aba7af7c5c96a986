"""The Docker Engine's failures reach the operator as messages, in one place: Engine."""

from __future__ import annotations

from types import SimpleNamespace

import docker.errors
import pytest
import requests

from release_phases.errors import ReleaseError
from release_phases.host.engine import Engine


def _engine(error: Exception) -> Engine:
    def fail(*_args: object, **_kwargs: object) -> None:
        raise error

    engine = Engine()
    engine.__dict__["client"] = SimpleNamespace(  # what cached_property would hold
        containers=SimpleNamespace(list=fail, get=fail),
        images=SimpleNamespace(get=fail),
        volumes=SimpleNamespace(get=fail),
    )
    return engine


@pytest.mark.reliability("fault", "the Docker Engine does not answer an SDK query")
@pytest.mark.parametrize(
    "error",
    [docker.errors.APIError("500 Server Error"), requests.exceptions.ConnectionError("refused")],
)
def test_an_engine_that_does_not_answer_is_an_operators_error(error):
    with pytest.raises(ReleaseError) as raised:
        _engine(error).containers_of("proj", "web")
    message = str(raised.value)
    assert "the Docker Engine did not answer (containers_of)" in message
    assert "docker info" in message and "Left untouched" in message


def test_a_missing_object_is_an_answer():
    assert _engine(docker.errors.ImageNotFound("no such image")).image_id("a:1") is None
    with pytest.raises(docker.errors.NotFound):
        _engine(docker.errors.NotFound("gone")).state("abc")


def test_what_counts_as_the_engine_failing():
    from release_phases.host.engine import engine_failed

    assert engine_failed(docker.errors.APIError("500 Server Error"))
    assert engine_failed(requests.exceptions.ReadTimeout("read timed out"))
    assert engine_failed(docker.errors.DockerException("no socket"))
    assert not engine_failed(docker.errors.NotFound("no such container"))  # an answer
    assert not engine_failed(ValueError("a bug of ours is not the engine's"))
