"""The shared training loop: resume gives the weights of an uninterrupted run; checkpoints of another run are refused."""

import numpy as np
import pytest
import torch

from edgead.errors import ConfigError, DependencyError
from edgead.kit.training import resolve_device, run_epochs

CONFIG = {"lr": 0.05, "width": 4}


def make():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(0.2), torch.nn.Linear(4, 1))
    return model, torch.optim.Adam(model.parameters(), lr=CONFIG["lr"])


def stepper(model, optimizer, stop_at=None):
    def step(epoch, rng):
        if epoch == stop_at:
            raise KeyboardInterrupt  # Ctrl-C at the start of this epoch
        for _ in range(5):
            x = torch.from_numpy(rng.standard_normal((16, 3)).astype(np.float32))
            loss = ((model(x) - x.sum(dim=1, keepdim=True)) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            yield loss.item()

    return step


def train(tmp_path, epochs, resume=None, stop_at=None, config=CONFIG, method="m"):
    model, optimizer = make()
    state = run_epochs(
        stepper(model, optimizer, stop_at), 5, epochs, seed=3, method=method, config=config,
        modules={"net": model}, optimizers={"adam": optimizer}, checkpoint=tmp_path / "c.ckpt", resume=resume, report=lambda line: None,
    )
    return model, state


def test_resume_after_an_interrupt_gives_the_uninterrupted_weights(tmp_path):
    straight, state = train(tmp_path / "a", 4)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", 4, stop_at=2)
    resumed, resumed_state = train(tmp_path / "b", 4, resume=tmp_path / "b" / "c.ckpt")
    assert resumed_state.losses == state.losses and len(state.losses) == 4
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_checkpoint_of_another_config_or_method_is_refused(tmp_path):
    train(tmp_path, 1)
    with pytest.raises(ConfigError, match=r"other settings \(lr 0.05 -> 0.1\)"):
        train(tmp_path, 2, resume=tmp_path / "c.ckpt", config={**CONFIG, "lr": 0.1})
    # a setting used only after the epochs (the threshold's false-alarm rate, eta) may change on resume
    train(tmp_path / "x", 1, config={**CONFIG, "false_alarm_rate": 0.01, "eta": None})
    train(tmp_path / "x", 2, resume=tmp_path / "x" / "c.ckpt", config={**CONFIG, "false_alarm_rate": 0.05, "eta": 0.001})
    with pytest.raises(ConfigError, match="checkpoint of --method m, not other"):
        train(tmp_path, 2, resume=tmp_path / "c.ckpt", method="other")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not an edgead training checkpoint"):
        train(tmp_path, 2, resume=tmp_path / "junk.ckpt")
    with pytest.raises(ConfigError, match="no such checkpoint"):
        train(tmp_path, 2, resume=tmp_path / "missing.ckpt")


@pytest.mark.parametrize("name", ["gpu", "foo", "cuda:x"])
def test_unknown_devices_are_errors(name):
    with pytest.raises(ConfigError, match="not a device"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here")
def test_cuda_without_a_gpu_says_what_to_install():
    with pytest.raises(DependencyError, match="CUDA build of torch"):
        resolve_device("cuda")
