# Data and tokenizer: once per task, shared by every cell.


rule prepare_data:
    output:
        f"{RESULTS}/data/{{task}}/task.json",
    params:
        settings=settings_hash("data"),
        out=f"{RESULTS}/data/{{task}}",
    log:
        f"{RESULTS}/logs/prepare_data/{{task}}.log",
    threads: 1
    resources:
        mem_mb=mem_mb("data"),
        runtime=runtime("data"),
    shell:
        "xkdbench prepare-data --config {CFG} --task {wildcards.task} --out {params.out} > {log} 2>&1"


rule train_tokenizer:
    input:
        rules.prepare_data.output,
    output:
        f"{RESULTS}/tokenizer/{{task}}/tokenizer_config.json",
    params:
        settings=settings_hash("tokenizer"),
        data=f"{RESULTS}/data/{{task}}",
        out=f"{RESULTS}/tokenizer/{{task}}",
    log:
        f"{RESULTS}/logs/train_tokenizer/{{task}}.log",
    threads: 1
    resources:
        mem_mb=mem_mb("data"),
        runtime=runtime("data"),
    shell:
        "xkdbench train-tokenizer --config {CFG} --task {wildcards.task} --data {params.data} --out {params.out} > {log} 2>&1"
