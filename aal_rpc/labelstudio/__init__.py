"""aal-labelstudio: a Label Studio project as an annotation front end of the coordinator.

`bridge.Bridge` is the loop that composes the two halves: `window` keeps a window of leased queries as tasks of the
project, and `reconcile` turns their annotations into labels in L (its docstring says what happens in each case).
`config` generates and checks the labeling config; `studio` is the bridge's side of Label Studio's SDK; `webhook`
receives Label Studio's webhooks (within bounds, from anyone); `ids` says which ids the bridge takes; `state` is the
bridge's durable state file (its owner's alone); `local` starts a throwaway Label Studio server for tests and
benchmarks.

The SDK is the optional extra `labelstudio` (`pip install 'aal-rpc[labelstudio]'`); Label Studio itself runs in its
own virtualenv (`make labelstudio`), since its pinned dependencies are many.
"""
