"""Machinery shared by the test emulators (``nemo_run.testing.dgxcloud`` and ``.lepton``).

* ``faults``: fault-injection rules (``/_emulator/faults``) and how requests match them.
* ``http``: the request handler base (body reading, JSON and streamed replies, fault actions,
  request and response counters) and the ``/_emulator`` control endpoints.
* ``replicas``: running a replica as a host process group or a Docker container, its exit
  code and its log; the Docker engine plumbing; free ports and mount path replacement;
  loopback addresses for host processes emulating pods (one per pod, for multi-node jobs).
* ``process``: starting an emulator as a process of its own (``launch``) and serving one
  until a signal (``__main__``).
"""
