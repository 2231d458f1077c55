# One cell: task x method variant x data fraction x seed, from the shared teacher and student init.
# Distillation and evaluation run in one job: one interpreter start per cell instead of two (a
# start costs seconds; the default grid has hundreds of cells). With resources.student.processes: N
# the job runs under torchrun as N ranks (each a share of every batch; rank 0 writes and evaluates).


def distill_inputs(wildcards):
    inputs = {
        "data": rules.prepare_data.output[0].format(task=wildcards.task),
        "student": rules.init_student.output[0].format(task=wildcards.task, seed=wildcards.seed),
        "teacher": rules.train_teacher.output[0].format(task=wildcards.task),
    }
    if PLAN[wildcards.method]["uses_teacher_outputs"]:
        inputs["teacher_outputs"] = rules.teacher_outputs.output[0].format(task=wildcards.task)
    if PLAN[wildcards.method]["teacher_cache"]:
        inputs["teacher_cache"] = rules.teacher_cache.output[0].format(task=wildcards.task)
    return inputs


def teacher_cache_flag(wildcards, input):
    return f"--teacher-cache {Path(input.teacher_cache).parent}" if "teacher_cache" in input.keys() else ""


rule distill:
    input:
        unpack(distill_inputs),
    output:
        summary=f"{RESULTS}/cells/{{task}}/{{method}}/f{{fraction}}/seed{{seed}}/train_summary.json",
        metrics=f"{RESULTS}/cells/{{task}}/{{method}}/f{{fraction}}/seed{{seed}}/eval/metrics.json",
    params:
        settings=settings_hash("cell"),
        data=f"{RESULTS}/data/{{task}}",
        student=f"{RESULTS}/student_init/{{task}}/seed{{seed}}/model",
        teacher=f"{RESULTS}/teacher/{{task}}/model",
        teacher_outputs=teacher_outputs_flag,
        teacher_cache=teacher_cache_flag,
        out=f"{RESULTS}/cells/{{task}}/{{method}}/f{{fraction}}/seed{{seed}}",
        launch=launcher("student"),
        rank_threads=rank_threads("student"),
    log:
        f"{RESULTS}/logs/distill/{{task}}/{{method}}/f{{fraction}}/seed{{seed}}.log",
    threads: threads("student")
    resources:
        gpu=gpus("student"),
        mem_mb=mem_mb("student"),
        runtime=runtime("student"),
    shell:
        "{params.launch} distill --config {CFG} --task {wildcards.task} --method {wildcards.method} "
        "--fraction {wildcards.fraction} --seed {wildcards.seed} --data {params.data} "
        "--teacher {params.teacher} --student {params.student} {params.teacher_outputs} {params.teacher_cache} "
        "--threads {params.rank_threads} --out {params.out} --evaluate --record-divergence > {log} 2>&1"
