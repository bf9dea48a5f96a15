import pytest

from core.sealed import SealError, seal, unseal


def test_sealed_value_round_trips_and_hides_the_plain_text() -> None:
    token = seal("pbx-secret ü", secret_key="k1")
    assert "pbx-secret" not in token
    assert unseal(token, secret_key="k1") == "pbx-secret ü"


def test_a_changed_secret_key_gives_a_clear_error() -> None:
    token = seal("x", secret_key="k1")
    with pytest.raises(SealError, match="secret key"):
        unseal(token, secret_key="k2")
    with pytest.raises(SealError):
        unseal("not a token", secret_key="k1")
