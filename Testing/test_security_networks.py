"""A model file cannot run code: every ``_target_`` passes the network allow-list.

Each attack is a real model folder or MONAI bundle whose network names a "gadget"
(a function that writes a file, starts a job, downloads from a server), fed to the
real command line (``predict --model``, ``finetune --base`` through a worker
process, ``models import-bundle``). The gadget's side effect is what is checked:
no file copied, no job folder, no request reaching the 127.0.0.1 server.
"""

import http.server
import json
import threading
from pathlib import Path

import pytest
import torch

from TransferSegLib.cli import main
from TransferSegLib.errors import ModelError
from TransferSegLib.models.base_model import load_model_dir
from TransferSegLib.models.catalog import read_user_models
from TransferSegLib.model_card import ModelCard
from TransferSegLib.models.model_dir import save_model_dir
from TransferSegLib.network_allowlist import network_class
from TransferSegLib.specs import NetworkSpec
from TransferSegLib.training.networks import build_network
from TransferSegLib.data.recipe import Recipe

from security_fixtures import TINY_NETWORK as TINY, write_ct, write_label


class _Counting(http.server.BaseHTTPRequestHandler):
    hits = []

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).hits.append(self.path)
        body = b"payload written by a gadget"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    _Counting.hits = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Counting.hits
    httpd.shutdown()
    httpd.server_close()


def _gadgets(tmp_path: Path, url: str):
    """(network dict, path the gadget would create) for each gadget the review found."""
    secret = tmp_path / "secret.txt"
    secret.write_text("patient list\n")
    return [
        ({"_target_": "TransferSegLib.models.download.use_local_file", "src": str(secret),
          "dest": str(tmp_path / "stolen.txt")}, tmp_path / "stolen.txt"),
        ({"_target_": "TransferSegLib.jobs.api.start_job", "spec": {"task": "finetune"},
          "job_dir": str(tmp_path / "evil-job"), "env": {"PYTHONSTARTUP": str(secret)}}, tmp_path / "evil-job"),
        ({"_target_": "monai.networks.nets.senet.download_url", "url": f"{url}/payload",
          "filepath": str(tmp_path / "downloaded.bin")}, tmp_path / "downloaded.bin"),
    ]


def _model_folder(folder: Path, network: dict) -> Path:
    """A real model folder (weights of a real network), then its model.json's network replaced."""
    spec = NetworkSpec.from_dict(TINY)
    card = ModelCard(name="gift", network=spec, labels=["background", "liver"], recipe=Recipe(),
                     patch_size=(16, 16, 16))
    save_model_dir(folder, build_network(spec).state_dict(), card)
    record = json.loads((folder / "model.json").read_text())
    record["network"] = network
    (folder / "model.json").write_text(json.dumps(record))
    return folder


def _bundle(folder: Path, network: dict) -> Path:
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    torch.save(build_network(NetworkSpec.from_dict(TINY)).state_dict(), folder / "models" / "model.pt")
    (folder / "configs" / "metadata.json").write_text(json.dumps({
        "name": "gift_bundle", "network_data_format": {"outputs": {"pred": {"channel_def": {"0": "background",
                                                                                             "1": "liver"}}}}}))
    (folder / "configs" / "inference.json").write_text(json.dumps({
        "network_def": network, "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16]},
        "preprocessing": {"_target_": "Compose", "transforms": []}}))
    return folder


def test_gadgets_in_model_json_are_refused_by_predict_and_nothing_is_written(tmp_path, server, capsys):
    url, hits = server
    image = write_ct(tmp_path / "ct.nii.gz")
    for i, (network, effect) in enumerate(_gadgets(tmp_path, url)):
        folder = _model_folder(tmp_path / f"model{i}", network)
        out = tmp_path / f"pred{i}.nii.gz"
        assert main(["predict", "--model", str(folder), "--image", str(image), "--output", str(out),
                     "--device", "cpu"]) == ModelError.exit_code
        err = capsys.readouterr().err
        assert network["_target_"] in err and str(folder / "model.json") in err, err
        assert not effect.exists() and not out.exists()
    assert hits == []


def test_gadgets_in_a_bundle_are_refused_by_import_bundle_and_nothing_is_registered(tmp_path, server, capsys):
    url, hits = server
    for i, (network, effect) in enumerate(_gadgets(tmp_path, url)):
        bundle = _bundle(tmp_path / f"bundle{i}", network)
        assert main(["models", "import-bundle", str(bundle), "--name", f"gift{i}"]) == ModelError.exit_code
        err = capsys.readouterr().err
        assert network["_target_"] in err and "inference.json" in err, err
        assert not effect.exists()
    assert read_user_models() == [] and hits == []


def test_a_gadget_base_is_refused_by_finetune_in_a_real_worker_and_no_model_is_written(tmp_path, server, capsys):
    url, hits = server
    image, label = write_ct(tmp_path / "ct.nii.gz"), write_label(tmp_path / "lab.nii.gz")
    (network, effect), (bundle_net, bundle_effect) = _gadgets(tmp_path, url)[0], _gadgets(tmp_path, url)[2]
    base = _model_folder(tmp_path / "base", network)
    out = tmp_path / "tuned"
    rc = main(["finetune", "--base", str(base), "--image", str(image), "--label", str(label), "--iterations", "2",
               "--output", str(out), "--device", "cpu", "--job-dir", str(tmp_path / "job")])
    assert rc != 0 and not out.exists() and not effect.exists()
    assert network["_target_"] in capsys.readouterr().err
    bundle = _bundle(tmp_path / "bundle", bundle_net)
    rc = main(["finetune", "--base", str(bundle), "--image", str(image), "--label", str(label), "--iterations", "2",
               "--output", str(out), "--device", "cpu", "--in-process"])
    assert rc == ModelError.exit_code and not out.exists() and not bundle_effect.exists()
    assert bundle_net["_target_"] in capsys.readouterr().err
    assert hits == []


@pytest.mark.parametrize("target, why", [
    ("monai.networks.nets.resnet.resnet10", "function"),             # a MONAI factory function
    ("monai.networks.nets.unet.Convolution", "monai.networks.blocks"),  # a class imported into a nets module
    ("monai.networks.nets.senet.OrderedDict", "collections"),          # a class, not a network
    ("monai.networks.nets.senet.load_state_dict_from_url", "torch.hub"),  # torch's downloader
    ("monai.networks.nets.torch.nn.Module", "does not exist"),
    ("torch.nn.Conv3d", "not in MONAI's network modules"),
    ("os.system", "not in MONAI's network modules"),
    ("TransferSegLib.training.networks.build_network", "not in MONAI's network modules"),
    ("monai.networks.nets.UNet; import os", "dotted"),
])
def test_only_network_classes_defined_in_monai_pass(target, why):
    """The class check runs before anything is built (and when a model folder or bundle is loaded); a wrong
    spelling or a target outside MONAI's network modules is refused already when the file is read (torch-free)."""
    with pytest.raises(ModelError, match=why):
        network_class(target, {}, "/shared/model.json")
    if why in ("dotted", "not in MONAI's network modules"):
        with pytest.raises(ModelError, match=why):
            NetworkSpec.from_dict({"_target_": target}, origin="/shared/model.json")


def test_a_model_folder_naming_a_function_is_refused_before_its_weights_are_read(tmp_path):
    folder = _model_folder(tmp_path / "m", {"_target_": "monai.networks.nets.resnet.resnet10"})
    with pytest.raises(ModelError, match="function"):
        load_model_dir(folder)


def test_a_monai_network_may_not_fetch_its_own_weights(server):
    url, hits = server
    hovernet = {"_target_": "monai.networks.nets.HoVerNet", "pretrained_url": f"{url}/resnet.pth"}
    with pytest.raises(ModelError, match="pretrained_url"):
        network_class(hovernet["_target_"], {"pretrained_url": hovernet["pretrained_url"]}, "x.json")
    with pytest.raises(ModelError, match="pretrained_url"):  # also when the spec skipped from_dict
        build_network(NetworkSpec("HoVerNet", {"pretrained_url": f"{url}/resnet.pth"}, origin="x.json"))
    with pytest.raises(ModelError, match="pretrained"):
        network_class("MILModel", {"num_classes": 2}, "x.json")  # downloads by default
    with pytest.raises(ModelError, match="repo_id"):
        network_class("Transchex", {}, "x.json")  # downloads BERT on construction
    assert hits == []
    assert NetworkSpec.from_dict({"_target_": "FlexibleUNet", "pretrained": False, "in_channels": 1,
                                  "out_channels": 2, "backbone": "resnet10", "spatial_dims": 3}).target


def test_torchscript_networks_run_only_from_trusted_sources(tmp_path):
    scripted = torch.jit.script(torch.nn.Conv3d(1, 2, 1))
    file = tmp_path / "net.pt"
    torch.jit.save(scripted, str(file))
    target = "TransferSegLib.models.checkpoints.TorchScriptNetwork"
    folder = _model_folder(tmp_path / "ts", {"_target_": target, "path": str(file)})
    with pytest.raises(ModelError, match="registered yourself"):
        load_model_dir(folder)
    # The shipped catalog names deepbet's file: a model fine-tuned from it names the same file and loads.
    assert network_class(target, {"package": "deepbet", "resource": "data/models/model.pt"}, "model.json")
    with pytest.raises(ModelError, match="registered yourself"):
        network_class(target, {"package": "deepbet", "resource": "data/other.pt"}, "model.json")
    # A model the user registers with their own spec is theirs to trust.
    assert network_class(target, {"path": str(file)}, "spec.json", trusted=True)
