"""dllm.load: real on-disk formats, clear errors naming the problem, special ids from config and tokenizer."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import dllm


def copy(src, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    return dst


def edit_weights(folder, fn):
    w = load_file(folder / "model.safetensors")
    fn(w)
    save_file(w, folder / "model.safetensors")


def test_sharded_equals_single_file(ckpt_dir):
    one = dllm.load(ckpt_dir("sdar", n_kv_heads=2, shards=1, seed=5))
    three = dllm.load(ckpt_dir("sdar", n_kv_heads=2, shards=3, seed=5))
    ids = torch.randint(0, 50, (2, 10))
    torch.testing.assert_close(one(ids).logits, three(ids).logits, atol=0, rtol=0)


def test_special_ids(llada, sdar):
    assert llada.family == "llada" and not llada.block_causal and llada.stop_ids == (59, 62)  # EOS, <|eot_id|>
    assert sdar.family == "sdar" and sdar.block_causal and sdar.block_size == 4
    assert sdar.mask_id == 63 and set(sdar.stop_ids) == {60, 62}                              # EOS, <|im_end|>


def test_sdar_mask_from_tokenizer_when_config_lacks_it(ckpt_dir, tmp_path):
    folder = copy(ckpt_dir("sdar", n_kv_heads=2), tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["mask_token_id"]
    (folder / "config.json").write_text(json.dumps(cfg))
    # tokenizer_config says <|MASK|>, added_tokens.json says <MASK>: the id comes through tokenizer.json
    assert dllm.load(folder).mask_id == 63


def test_tokenizer_loads(ckpt_dir):
    tok = dllm.load_tokenizer(ckpt_dir("llada", n_kv_heads=2))
    assert tok.mask_token_id == 63 and tok.eos_token_id == 59
    assert tok("w1 w2 w3", add_special_tokens=False).input_ids == [1, 2, 3]
    text = tok.apply_chat_template([{"role": "user", "content": "w5"}], add_generation_prompt=True, tokenize=False)
    assert text.endswith("assistant<|end_header_id|>\n\n")


def test_missing_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="config.json"):
        dllm.load(tmp_path)


def test_missing_weights_file_and_pickle_refused(ckpt_dir, tmp_path):
    folder = copy(ckpt_dir("llada", n_kv_heads=2), tmp_path)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="safetensors.*pickle"):
        dllm.load(folder)


def test_other_safetensors_beside_the_weights_are_ignored(ckpt_dir, tmp_path):
    # a Learn2PD filter or LoRA adapter shipped in the same folder is not part of the model
    folder = copy(ckpt_dir("sdar", n_kv_heads=2, seed=3), tmp_path)
    save_file({"net.0.weight": torch.ones(4, 4)}, folder / "learn2pd_filter.safetensors")
    ids = torch.randint(0, 50, (1, 8))
    torch.testing.assert_close(dllm.load(folder)(ids).logits, dllm.load(ckpt_dir("sdar", n_kv_heads=2, seed=3))(ids).logits)


def test_missing_path_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint folder"):
        dllm.load(tmp_path / "nope")


def test_missing_weight_is_named(ckpt_dir, tmp_path):
    folder = copy(ckpt_dir("llada", n_kv_heads=2), tmp_path)
    edit_weights(folder, lambda w: w.pop("model.transformer.blocks.1.up_proj.weight"))
    with pytest.raises(ValueError, match=r"missing \['model.transformer.blocks.1.up_proj.weight'\]"):
        dllm.load(folder)


def test_unexpected_weight_is_named(ckpt_dir, tmp_path):
    folder = copy(ckpt_dir("sdar", n_kv_heads=2), tmp_path)
    edit_weights(folder, lambda w: w.__setitem__("model.layers.0.self_attn.rotary.inv_freq", torch.ones(4)))
    with pytest.raises(ValueError, match=r"unexpected \['model.layers.0.self_attn.rotary.inv_freq'\]"):
        dllm.load(folder)


def test_wrong_shape_is_named(ckpt_dir, tmp_path):
    folder = copy(ckpt_dir("sdar", n_kv_heads=2), tmp_path)
    edit_weights(folder, lambda w: w.__setitem__("model.norm.weight", torch.ones(7)))
    with pytest.raises(ValueError, match="model.norm.weight has shape"):
        dllm.load(folder)


def test_wrong_dtype_string(ckpt_dir):
    with pytest.raises(ValueError, match="unknown dtype 'float13'"):
        dllm.load(ckpt_dir("llada", n_kv_heads=2), dtype="float13")
    assert dllm.load(ckpt_dir("llada", n_kv_heads=2), dtype="bf16").dtype == torch.bfloat16


def test_unknown_family(ckpt_dir, tmp_path):
    folder = copy(ckpt_dir("llada", n_kv_heads=2), tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unknown model family.*gpt2"):
        dllm.load(folder)


def test_unsupported_option_is_refused(ckpt_dir, tmp_path):
    folder = copy(ckpt_dir("sdar", n_kv_heads=2), tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["rope_scaling"] = {"type": "yarn", "factor": 4}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="rope_scaling"):
        dllm.load(folder)


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="could not fetch 'no-such-owner/no-such-model'.*local folder"):
        dllm.load("no-such-owner/no-such-model")


def test_bad_device():
    with pytest.raises(ValueError, match="device"):
        dllm.loading.parse_device("tpu:7")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weight_is_refused_and_named(ckpt_dir, tmp_path, value):
    folder = copy(ckpt_dir("sdar", n_kv_heads=2), tmp_path)
    edit_weights(folder, lambda w: w["model.layers.1.mlp.up_proj.weight"].view(-1).__setitem__(7, value))
    with pytest.raises(ValueError, match=r"weight model.layers.1.mlp.up_proj.weight \(in model.safetensors\) "
                                         "holds NaN or inf.*check_finite=False"):
        dllm.load(folder)
    model = dllm.load(folder, check_finite=False)   # the opt-out loads it as it is
    assert not torch.isfinite(model.layers[1].mlp.up.weight).all()


def test_finite_check_has_no_false_alarm_when_a_sum_overflows(ckpt_dir, tmp_path):
    # the fast path sums each weight; 3e38 + 3e38 overflows float32, so the exact elementwise test must decide
    folder = copy(ckpt_dir("llada", n_kv_heads=2), tmp_path)
    edit_weights(folder, lambda w: w["model.transformer.ln_f.weight"][:2].fill_(3e38))
    assert dllm.load(folder).norm.weight[0] == 3e38


def test_finite_check_in_a_sharded_checkpoint_names_the_shard(ckpt_dir, tmp_path):
    folder = copy(ckpt_dir("llada", n_kv_heads=2, shards=3), tmp_path)
    shard = sorted(folder.glob("model-*.safetensors"))[1]
    w = load_file(shard)
    name = sorted(w)[0]
    w[name].view(-1)[0] = float("nan")
    save_file(w, shard)
    with pytest.raises(ValueError, match=rf"weight {name} \(in {shard.name}\) holds NaN"):
        dllm.load(folder)


@pytest.mark.parametrize("key,value,what", [("mask_token_id", 64, "mask_id"), ("mask_token_id", -1, "mask_id"),
                                            ("pad_token_id", 500, "pad_id")])
def test_special_id_outside_the_vocabulary_is_caught_at_load(ckpt_dir, tmp_path, key, value, what):
    folder = copy(ckpt_dir("llada", n_kv_heads=2), tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, key: value}))
    with pytest.raises(ValueError, match=rf"{what} \[{value}\] lies outside the vocabulary \[0, 64\)"):
        dllm.load(folder)


@pytest.mark.parametrize("content", [b"", b"garbage bytes, not a safetensors header", "cut"])
def test_garbage_weight_file_names_the_file(ckpt_dir, tmp_path, content):
    folder = copy(ckpt_dir("sdar", n_kv_heads=2), tmp_path)
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:2000] if content == "cut" else content)
    with pytest.raises(ValueError, match="model.safetensors is not a readable safetensors file.*re-download"):
        dllm.load(folder)


def test_garbage_shard_index_names_the_file(ckpt_dir, tmp_path):
    folder = copy(ckpt_dir("sdar", n_kv_heads=2, shards=2), tmp_path)
    (folder / "model.safetensors.index.json").write_text('{"weight_map": ')
    with pytest.raises(ValueError, match="model.safetensors.index.json is not a valid shard index"):
        dllm.load(folder)
