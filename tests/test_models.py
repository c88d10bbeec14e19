import pytest

from iro.core.models import ModelNotFoundError, resolve_model


def test_local_checkpoint_and_errors(tiny_lm, tmp_path):
    assert resolve_model(str(tiny_lm)) == str(tiny_lm.resolve())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match=r"has no config\.json"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(ModelNotFoundError, match="unknown embedded model"):
        resolve_model("embedded:gpt-5")
    with pytest.raises(ModelNotFoundError, match="neither an embedded model"):
        resolve_model("./no/such/dir")
    assert (
        resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
        == "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
