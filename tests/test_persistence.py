"""Save / load: identical outputs after a round trip; broken and foreign files are refused."""

import pytest
import torch

import rhvae
from rhvae.persistence import ModelFileError, load_model, save_model
from rhvae.training import train


@pytest.fixture(scope="module")
def trained(metric_data):
    torch.manual_seed(0)
    model = rhvae.RHVAE(n_lf=3, eps_lf=0.001)
    history = train(model, metric_data.train.x, metric_data.test.x, epochs=2, progress=False)
    return model, history


def test_round_trip_gives_identical_outputs(tmp_path, trained, metric_data):
    model, history = trained
    path = save_model(model, tmp_path / "m.pt", history, {"note": "test"})
    loaded, loaded_history, provenance = load_model(path, with_history=True)
    assert type(loaded) is rhvae.RHVAE and loaded.config() == model.config()
    assert loaded_history.train_loss == history.train_loss and provenance == {"note": "test"}
    x = metric_data.test.x
    a = model.eval()(x, torch.Generator().manual_seed(0))
    b = loaded(x, torch.Generator().manual_seed(0))
    assert torch.equal(a.log_weight, b.log_weight) and torch.equal(a.zK, b.zK)
    assert torch.equal(loaded.centroids, model.centroids) and torch.equal(loaded.M, model.M)
    z = torch.randn(5, 2)
    assert torch.equal(loaded.G_inv(z), model.G_inv(z))


def test_missing_truncated_and_foreign_files_are_refused(tmp_path, trained):
    model, _ = trained
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "nope.pt")
    path = save_model(model, tmp_path / "m.pt")
    data = path.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupted"):
        load_model(tmp_path / "truncated.pt")
    (tmp_path / "noise.pt").write_bytes(b"not a model at all")
    with pytest.raises(ModelFileError, match="truncated or corrupted"):
        load_model(tmp_path / "noise.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(ModelFileError, match="format tag"):
        load_model(tmp_path / "foreign.pt")
    with pytest.raises(ModelFileError, match="holds a RHVAE, expected a VAE"):
        load_model(path, expected_type="VAE")


def test_a_device_or_an_empty_file_is_named_as_such_not_as_missing(tmp_path):
    with pytest.raises(ModelFileError) as caught:
        load_model("/dev/null")
    assert str(caught.value) == "/dev/null is not an rhvae model file (not a regular file: a device, pipe or socket)"
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"is not an rhvae model file \(it is empty: 0 bytes\)"):
        load_model(tmp_path / "empty.pt")


def test_integer_weights_are_refused_not_cast(tmp_path, trained):
    from rhvae.persistence import state_digest

    path = save_model(trained[0], tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    name = next(iter(payload["state_dict"]))
    payload["state_dict"][name] = payload["state_dict"][name].round().to(torch.int64)
    payload["state_sha256"] = state_digest(payload["state_dict"])
    torch.save(payload, tmp_path / "int.pt")
    with pytest.raises(ModelFileError) as caught:
        load_model(tmp_path / "int.pt")
    assert str(caught.value) == f"{tmp_path / 'int.pt'} holds non-floating weights in {name} (int64): refusing it"


def test_a_pickled_object_is_not_executed(tmp_path):
    """weights_only=True: a file carrying an arbitrary pickled object is refused, not unpickled."""

    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    torch.save({"format": "rhvae-model", "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ModelFileError, match="not an rhvae model file .*pickled objects") as info:
        load_model(tmp_path / "evil.pt")
    assert "weights_only" not in str(info.value)


def test_a_mismatched_state_is_refused(tmp_path, trained):
    model, _ = trained
    path = save_model(model, tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["config"] = payload["config"].replace('"hidden_dim": 400', '"hidden_dim": 300')
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(ModelFileError, match="does not match"):
        load_model(tmp_path / "mismatch.pt")


def test_save_is_atomic(tmp_path, trained, monkeypatch):
    model, _ = trained
    path = save_model(model, tmp_path / "m.pt")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_model(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind


def test_a_link_to_a_tampered_copy_of_a_shipped_model_is_refused(tmp_path, monkeypatch):
    """A symbolic link under data/models pointing outside it, and a link outside pointing in, are both checked
    against SHA256SUMS (the content is what counts). On a copy of one shipped file in a folder of its own."""
    from rhvae.paths import SHIPPED_DIR

    name = next(n for n in rhvae.persistence.shipped_checksums() if "/classifiers/" not in n and n.endswith(".pt"))
    shipped = tmp_path / "models"
    original = shipped / name
    original.parent.mkdir(parents=True)
    original.write_bytes((SHIPPED_DIR / name).read_bytes())
    (shipped / "SHA256SUMS").write_text(f"{rhvae.persistence.sha256(original)}  {name}\n")
    monkeypatch.setattr(rhvae.persistence, "SHIPPED_DIR", shipped)
    load_model(original)  # the copy passes
    data = bytearray(original.read_bytes())
    data[-100] ^= 0xFF
    tampered = tmp_path / "tampered.pt"
    tampered.write_bytes(bytes(data))

    link_in = original.parent / "link_to_tampered.pt"  # an unlisted name inside, linking out
    link_in.symlink_to(tampered)
    with pytest.raises(ModelFileError, match="not listed in its SHA256SUMS"):
        load_model(link_in)
    original.unlink()
    original.symlink_to(tampered)  # the listed name links to tampered bytes outside
    with pytest.raises(ModelFileError, match="does not match its checksum"):
        load_model(original)
    original.unlink()
    original.write_bytes(bytes(data))  # tampered in place, reached through a link from outside
    link_out = tmp_path / "outside.pt"
    link_out.symlink_to(original)
    with pytest.raises(ModelFileError, match="does not match its checksum"):
        load_model(link_out)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_a_model_saved_in_another_precision_loads_into_float32_and_works(tmp_path, dtype, metric_data):
    model = rhvae.RHVAE(hidden_dim=16)
    model.freeze_metric(metric_data.train.x[:20])
    path = save_model(model.to(dtype), tmp_path / "m.pt")
    loaded = load_model(path)
    assert all(t.dtype == torch.float32 for t in loaded.state_dict().values() if t.is_floating_point())
    out = loaded(metric_data.test.x[:4])
    assert torch.isfinite(out.log_weight).all()
    samples = rhvae.generate(loaded, n_samples=4, mcmc_steps=2)
    assert samples.images.shape == (4, 784)


def test_a_bit_flip_in_a_model_outside_data_models_is_refused(tmp_path, trained):
    path = save_model(trained[0], tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["dec_out.weight"][0, 0] += 1e-3  # one weight changed, the file still well-formed
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match="do not match the digest recorded when it was saved"):
        load_model(path)


def test_the_checksum_list_names_itself_and_the_bad_line(tmp_path, monkeypatch):
    shipped = tmp_path / "models"
    (shipped / "x").mkdir(parents=True)
    (shipped / "x" / "m.pt").write_bytes(b"model")
    monkeypatch.setattr(rhvae.persistence, "SHIPPED_DIR", shipped)
    with pytest.raises(ModelFileError, match=r"SHA256SUMS is missing"):
        rhvae.persistence.shipped_checksums()
    (shipped / "SHA256SUMS").write_text(f"{'0' * 64}  x/m.pt\nnot a checksum line\n")
    with pytest.raises(ModelFileError, match=r"SHA256SUMS, line 2: not a 'SHA256  NAME' line"):
        rhvae.persistence.shipped_checksums()


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing(tmp_path, trained, monkeypatch):
    """torch's zip writer fails with "unexpected pos" when the disk fills; the set of record files is all or none."""
    from rhvae import files

    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 320 vs 208")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(files.WriteError, match=r"cannot write .*m\.pt: no space left on the device"):
        save_model(trained[0], tmp_path / "m.pt")
    monkeypatch.setattr(torch, "save", real_save)
    assert list(tmp_path.iterdir()) == []
    writers = {tmp_path / "a.json": files.text_writer("{}"), tmp_path / "b.pt": lambda tmp: full_disk(None, tmp)}
    with pytest.raises(files.WriteError, match="b.pt"):
        files.atomic_write_set(writers)
    assert list(tmp_path.iterdir()) == [], "a.json is not left without b.pt"
