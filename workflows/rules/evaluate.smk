# Evaluation: greedy + sampled outputs and metrics.json for every cell, the teacher and each
# student initialisation (the reference rows of the tables).


def reward_teacher_flag(wildcards):
    """Methods that learn a reward get the teacher too, to score its samples in the diagnostic."""
    if PLAN[wildcards.method]["learns_reward"]:
        return f"--teacher {RESULTS}/teacher/{wildcards.task}/model"
    return ""


rule evaluate_cell:
    input:
        data=rules.prepare_data.output,
        cell=rules.distill.output,
        teacher=rules.train_teacher.output,
    output:
        f"{RESULTS}/cells/{{task}}/{{method}}/f{{fraction}}/seed{{seed}}/eval/metrics.json",
    params:
        data=f"{RESULTS}/data/{{task}}",
        checkpoint=f"{RESULTS}/cells/{{task}}/{{method}}/f{{fraction}}/seed{{seed}}/model",
        teacher=reward_teacher_flag,
        out=f"{RESULTS}/cells/{{task}}/{{method}}/f{{fraction}}/seed{{seed}}/eval",
    log:
        f"{RESULTS}/logs/evaluate/{{task}}/{{method}}/f{{fraction}}/seed{{seed}}.log",
    threads: threads("evaluate")
    resources:
        gpu=gpus("evaluate"),
        mem_mb=mem_mb("evaluate"),
        runtime=runtime("evaluate"),
    shell:
        "xkdbench evaluate --config {CFG} --task {wildcards.task} --data {params.data} "
        "--checkpoint {params.checkpoint} {params.teacher} --seed {wildcards.seed} --threads {threads} "
        "--out {params.out} > {log} 2>&1"


rule evaluate_reference:
    """The teacher (seed 0) and the student initialisations, evaluated like any cell."""
    input:
        data=rules.prepare_data.output,
        model=f"{RESULTS}/{{reference}}/train_summary.json",
    output:
        f"{RESULTS}/{{reference}}/eval/metrics.json",
    wildcard_constraints:
        reference=r"(teacher/[^/]+|student_init/[^/]+/seed\d+)",
    params:
        data=lambda wc: f"{RESULTS}/data/{wc.reference.split('/')[1]}",
        task=lambda wc: wc.reference.split("/")[1],
        seed=lambda wc: wc.reference.rsplit("seed", 1)[1] if "seed" in wc.reference else 0,
        checkpoint=f"{RESULTS}/{{reference}}/model",
        out=f"{RESULTS}/{{reference}}/eval",
    log:
        f"{RESULTS}/logs/evaluate/{{reference}}.log",
    threads: threads("evaluate")
    resources:
        gpu=gpus("evaluate"),
        mem_mb=mem_mb("evaluate"),
        runtime=runtime("evaluate"),
    shell:
        "xkdbench evaluate --config {CFG} --task {params.task} --data {params.data} "
        "--checkpoint {params.checkpoint} --seed {params.seed} --threads {threads} --out {params.out} > {log} 2>&1"
