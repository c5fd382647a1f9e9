"""Guidance distillation: the student starts from its teacher, learns the teacher's guided output with its full
conditioning, recommends unguided sampling, records its teacher and keeps it on resume; bad teachers are refused."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from train_helpers import make_trainer, run_main, tiny_train_config

from inference.export import export_release
from ldm.checkpoint import CheckpointError, load_models, read_checkpoint
from ldm.diffusion.guidance import combine, combine_per_sample
from ldm.pipeline import DefFillerPipeline
from runtime.digest import file_sha256
from runtime.errors import UserError

V_ZTSNR = ["diffusion.params.zero_terminal_snr=true", "diffusion.params.parameterization=v",
           "diffusion.params.timestep_spacing=trailing"]
GUIDANCE = {"sampler": "ddim", "steps": 4, "guidance_scale": 3.0, "guidance_interval": [0, 500],
            "guidance_low": [1.0, 3]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny v-model trained two iterations with EMA, exported with a recommended guidance: the teacher."""
    root = tmp_path_factory.mktemp("distill")
    config = tiny_train_config(root)
    assert run_main(config, root, "teacher", "--enable_ema", "--ema_rate", "0.5", "--set", *V_ZTSNR) == 0
    teacher = export_release(root / "teacher" / "checkpoints" / "latest.safetensors", root / "teacher.safetensors",
                             sampling=GUIDANCE, dtype="fp32")
    return config, teacher


def student(setup, tmp_path, *extra):
    config, teacher = setup
    return make_trainer(config, tmp_path, "student", "--distill_from", str(teacher), "--set", *V_ZTSNR, *extra)


def test_per_sample_combination_guides_only_inside_the_interval():
    out_u, out_c = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    t = torch.tensor([10, 600, 500, 999])
    got = combine_per_sample(out_u, out_c, t, 3.0, (0, 500), (1.0, 3))
    guided = combine(out_u, out_c, 3.0, (1.0, 3))
    for i, inside in enumerate([True, False, True, False]):
        torch.testing.assert_close(got[i], guided[i] if inside else out_c[i])
    torch.testing.assert_close(combine_per_sample(out_u, out_c, t, 3.0), out_u + 3 * (out_c - out_u))


def test_student_starts_from_the_teacher_and_learns_its_guided_output(setup, tmp_path):
    _, teacher_path = setup
    tr = student(setup, tmp_path, "train.cond_drop_prob=0.5", "train.null_grounding_prob=0.5")
    ref = load_models(teacher_path, weights="auto")
    for name, value in ref.model.state_dict().items():
        torch.testing.assert_close(tr.unet.state_dict()[name], value, msg=name)
    pipe = DefFillerPipeline(ref, channels_last=False)

    def expected(x, t, context, sem, gmask, keep=None):
        """The teacher's guided output computed here, branch by branch."""
        if tr.teacher is not None:  # the student always sees its full conditioning
            assert gmask.eq(1).all() and keep is None
        cond, uncond = pipe.conditioning(sem, captions)
        with torch.no_grad():
            e_c = ref.model(x, t, cond.context, cond.grounding_tokens, cond.extra)
            e_u = ref.model(x, t, uncond.context, uncond.grounding_tokens, uncond.extra)
        d = e_c - e_u
        coarse = F.avg_pool2d(F.pad(d, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        guided = e_u + 3.0 * (d - coarse) + 1.0 * coarse
        inside = ((t >= 0) & (t <= 500)).view(-1, 1, 1, 1)
        seen.extend(inside.flatten().tolist())
        return torch.where(inside, guided, e_c)

    batch = next(iter(torch.utils.data.DataLoader(tr.dataset, batch_size=6)))
    captions, seen = list(batch["caption"]), []
    tr.denoiser = expected  # a student that outputs exactly the teacher's guided prediction has zero loss
    for seed in range(4):
        loss = tr.compute_loss(batch, torch.Generator().manual_seed(seed))
        assert float(loss) < 1e-9
    assert any(seen) and not all(seen)  # timesteps inside and outside the guidance interval were drawn
    # the plain v target is something else: the loss would not be zero without the teacher
    tr.teacher = None
    assert float(tr.compute_loss(batch, torch.Generator().manual_seed(0))) > 1e-3


def test_student_checkpoint_samples_unguided_and_records_its_teacher(setup, tmp_path):
    from inference.generate import recommended_sampling

    config, teacher = setup
    assert run_main(config, tmp_path, "s", "--distill_from", str(teacher), "--total_iters", "1",
                    "--set", *V_ZTSNR) == 0
    ckpt = read_checkpoint(tmp_path / "s" / "checkpoints" / "latest.safetensors")
    assert recommended_sampling(ckpt.config) == {"sampler": "ddim", "steps": 4, "guidance_scale": 1.0}
    assert ckpt.metadata["teacher_sha256"] == file_sha256(teacher)
    assert ckpt.metadata["teacher_guidance"] == "guidance 3, t 0-500, low frequencies (box 3) 1"
    assert "the teacher's ema weights" in ckpt.metadata["init"]
    release = export_release(tmp_path / "s" / "checkpoints" / "latest.safetensors", tmp_path / "s.safetensors")
    assert read_checkpoint(release).metadata["teacher_sha256"] == file_sha256(teacher)


def test_infer_notes_guidance_on_a_distilled_model(setup, tmp_path, capsys):
    import infer
    from tools.tiny_model import write_masks

    config, teacher = setup
    assert run_main(config, tmp_path, "s", "--distill_from", str(teacher), "--total_iters", "1",
                    "--set", *V_ZTSNR) == 0
    write_masks(tmp_path / "masks", ["In_1"])
    ckpt = str(tmp_path / "s" / "checkpoints" / "latest.safetensors")
    args = ["--ckpt", ckpt, "--mask_dir", str(tmp_path / "masks"), "--threads", "1"]
    assert infer.main([*args, "--out", str(tmp_path / "g1")]) == 0
    out = capsys.readouterr().out
    assert "ddim 4 steps, guidance 1\n" in out and "note:" not in out
    assert infer.main([*args, "--out", str(tmp_path / "g3"), "--guidance_scale", "3"]) == 0
    out = capsys.readouterr().out
    assert "note: this model was distilled to give its teacher's guidance 3, t 0-500" in out


def test_a_resumed_student_keeps_its_teacher(setup, tmp_path):
    config, teacher = setup
    assert run_main(config, tmp_path, "s", "--distill_from", str(teacher), "--total_iters", "1",
                    "--set", *V_ZTSNR) == 0
    other = export_release(teacher, tmp_path / "other.safetensors", sampling={"guidance_scale": 2.0}, dtype="fp32")
    with pytest.raises(UserError, match="train.distill_from, now sha256"):
        run_main(config, tmp_path, "s", "--distill_from", str(other), "--total_iters", "2", "--set", *V_ZTSNR)
    with pytest.raises(UserError, match="as train.distill_from, now none"):
        run_main(config, tmp_path, "s", "--total_iters", "2", "--set", *V_ZTSNR)
    assert run_main(config, tmp_path, "s", "--distill_from", str(teacher), "--total_iters", "2",
                    "--set", *V_ZTSNR) == 0


def test_bad_teachers_are_one_line_errors(setup, tmp_path):
    config, _ = setup
    with pytest.raises(UserError, match="distill_from .*missing.safetensors: file not found"):
        make_trainer(config, tmp_path, "a", "--distill_from", str(tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError, match="noise schedule"):  # an eps run cannot learn a v teacher's output
        make_trainer(config, tmp_path, "b", "--distill_from", str(setup[1]))
