# The teacher: trained once per task (SFT on the full train split); its outputs on the train split
# are decoded once per task for the methods that train on them (SeqKD and friends), and its token
# distributions on every fixed training sequence are cached once per task (config `teacher_cache`) for
# the cells that would otherwise recompute them at every step.


rule train_teacher:
    # Each teacher unblocks every cell of its task: start them before any cell, or the longest teacher
    # ends up alone on the cores at the end of the run.
    priority: 10
    input:
        data=rules.prepare_data.output,
        tokenizer=rules.train_tokenizer.output,
    output:
        f"{RESULTS}/teacher/{{task}}/train_summary.json",
    params:
        settings=settings_hash("teacher"),
        data=f"{RESULTS}/data/{{task}}",
        tokenizer=f"{RESULTS}/tokenizer/{{task}}",
        out=f"{RESULTS}/teacher/{{task}}",
    log:
        f"{RESULTS}/logs/train_teacher/{{task}}.log",
    threads: threads("teacher")
    resources:
        gpu=gpus("teacher"),
        mem_mb=mem_mb("teacher"),
        runtime=runtime("teacher"),
    shell:
        "xkdbench train-teacher --config {CFG} --task {wildcards.task} --data {params.data} "
        "--tokenizer {params.tokenizer} --threads {threads} --out {params.out} > {log} 2>&1"


rule teacher_outputs:
    input:
        data=rules.prepare_data.output,
        teacher=rules.train_teacher.output,
    output:
        f"{RESULTS}/teacher_outputs/{{task}}.jsonl",
    params:
        settings=settings_hash("teacher_outputs"),
        data=f"{RESULTS}/data/{{task}}",
        teacher=f"{RESULTS}/teacher/{{task}}/model",
    log:
        f"{RESULTS}/logs/teacher_outputs/{{task}}.log",
    threads: threads("teacher")
    resources:
        gpu=gpus("teacher"),
        mem_mb=mem_mb("teacher"),
        runtime=runtime("teacher"),
    shell:
        "xkdbench teacher-outputs --config {CFG} --task {wildcards.task} --data {params.data} "
        "--teacher {params.teacher} --threads {threads} --out {output} > {log} 2>&1"


def teacher_cache_inputs(wildcards):
    inputs = {"data": rules.prepare_data.output[0].format(task=wildcards.task),
              "teacher": rules.train_teacher.output[0].format(task=wildcards.task)}
    if CACHE_PLAN[wildcards.task]["teacher_outputs"]:
        inputs["teacher_outputs"] = rules.teacher_outputs.output[0].format(task=wildcards.task)
    return inputs


rule teacher_cache:
    input:
        unpack(teacher_cache_inputs),
    output:
        # written last, after every array file: its presence means the cache is complete
        f"{RESULTS}/teacher_cache/{{task}}/manifest.json",
    params:
        settings=settings_hash("teacher_cache"),
        data=f"{RESULTS}/data/{{task}}",
        teacher=f"{RESULTS}/teacher/{{task}}/model",
        teacher_outputs=teacher_outputs_flag,
        out=f"{RESULTS}/teacher_cache/{{task}}",
    log:
        f"{RESULTS}/logs/teacher_cache/{{task}}.log",
    threads: threads("teacher")
    resources:
        gpu=gpus("teacher"),
        mem_mb=mem_mb("teacher"),
        runtime=runtime("teacher"),
    shell:
        "xkdbench teacher-cache --config {CFG} --task {wildcards.task} --data {params.data} "
        "--teacher {params.teacher} {params.teacher_outputs} --threads {threads} --out {params.out} > {log} 2>&1"
