"""Training techniques any experiment may use, built by name (torch-free here: the names live in this file).

    optimizers.py     build_optimizer(name, params, lr, **options)     SGD ... Nadam, AdaBound/AMSBound, K-FAC
    kfac.py           the K-FAC optimizer
    lr_schedules.py   build_scheduler(name, optimizer, steps_per_epoch, epochs, **options)
    normalization.py  apply_normalization(model, mode), data_dependent_init(model, batch)

The names below are the one list of each kind: the builders and the params schemas' Literals are made from them.
Every setting's value comes from params.yaml (with its reason there); the code holds types, ranges and the
settings that define a method (plain SGD has no momentum).
"""
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "adamw", "adamax", "nadam",
              "amsgrad", "adabound", "amsbound", "kfac")
LR_SCHEDULES = ("constant", "step", "cosine", "cyclical", "one_cycle")
NORMALIZATIONS = ("batch", "weight", "both", "none", "layer", "instance")
