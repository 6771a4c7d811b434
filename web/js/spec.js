// Generated from shared/protocol.json by web/tools/sync_spec.mjs; do not edit by hand.
// The livedrag wire protocol contract (shared/protocol.md), as data.
export const SPEC = Object.freeze({
 "protocol_version": 1,
 "encoding": "msgpack, one map per binary websocket message, key t = message type",
 "limits": {
  "max_message_bytes": 32768,
  "max_str_bytes": 512,
  "max_array_len": 512,
  "max_map_len": 32,
  "max_pairs": 64,
  "max_stroke_points": 256,
  "max_name_chars": 32,
  "mask_max_cells": 64,
  "cursor_hz": 20,
  "frame_credits": 2,
  "hello_timeout_s": 10,
  "ping_interval_s": 15,
  "idle_timeout_s": 60,
  "history_max": 50,
  "max_project_steps": 1000,
  "edit_rate_per_s": 30,
  "edit_burst": 60,
  "cursor_rate_per_s": 30,
  "cursor_burst": 30,
  "control_rate_per_s": 60,
  "control_burst": 120,
  "strike_burst": 20,
  "strike_rate_per_s": 1
 },
 "patterns": {
  "id": "^[A-Za-z0-9_-]{1,32}$",
  "token": "^[A-Za-z0-9_-]{1,128}$",
  "client_id": "^[A-Za-z0-9_-]{8,64}$",
  "secret": "^[A-Za-z0-9_-]{22,64}$",
  "latent": "^[0-9a-f]{64}$",
  "upload": "^[0-9a-f]{64}$"
 },
 "mask_cell": {
  "none": 0,
  "flexible": 1,
  "fixed": 2
 },
 "types": {
  "image": {
   "type": "map",
   "required": true,
   "fields": {
    "model": {
     "type": "str",
     "required": true,
     "min_len": 1,
     "max_len": 64,
     "doc": "generator name"
    },
    "w": {
     "type": "int",
     "required": true,
     "min": 1,
     "max": 4096
    },
    "h": {
     "type": "int",
     "required": true,
     "min": 1,
     "max": 4096
    },
    "seed": {
     "type": "int",
     "required": true,
     "nullable": true,
     "min": 0,
     "max": 4294967295,
     "doc": "seed the image came from"
    },
    "truncation": {
     "type": "float",
     "required": true,
     "min": 0,
     "max": 2
    },
    "latent": {
     "type": "str",
     "required": true,
     "nullable": true,
     "pattern": "^[0-9a-f]{64}$",
     "doc": "committed latent; null: the seed's"
    }
   }
  },
  "pair": {
   "type": "map",
   "required": true,
   "fields": {
    "id": {
     "type": "str",
     "required": true,
     "pattern": "^[A-Za-z0-9_-]{1,32}$",
     "doc": "pair id chosen by the client that adds it"
    },
    "handle": {
     "type": "point",
     "required": true,
     "doc": "[x, y] image pixels; integer values are pixel centres; 0 <= x < W, 0 <= y < H"
    },
    "target": {
     "type": "point",
     "required": true,
     "doc": "[x, y] image pixels; integer values are pixel centres; 0 <= x < W, 0 <= y < H"
    },
    "owner": {
     "type": "str",
     "required": true,
     "nullable": true
    }
   }
  },
  "mask": {
   "type": "map",
   "required": true,
   "fields": {
    "w": {
     "type": "int",
     "required": true,
     "min": 1,
     "max": 64
    },
    "h": {
     "type": "int",
     "required": true,
     "min": 1,
     "max": 64
    },
    "cells": {
     "type": "bin",
     "required": true,
     "max_len": 4096
    }
   },
   "doc": "grid of w x h cells over the image, row-major, one byte per cell: 0 none, 1 flexible, 2 fixed"
  },
  "params": {
   "type": "map",
   "required": true,
   "fields": {
    "mode": {
     "type": "enum",
     "required": true,
     "values": [
      "optimize",
      "predict"
     ],
     "doc": "optimize: DragGAN optimiser; predict: latent predictor"
    },
    "lr": {
     "type": "float",
     "required": true,
     "min": 0.000001,
     "max": 1,
     "doc": "optimiser learning rate"
    },
    "lambda": {
     "type": "float",
     "required": true,
     "min": 0,
     "max": 1000,
     "doc": "weight of the fixed-region (mask) loss"
    },
    "max_steps": {
     "type": "int",
     "required": true,
     "min": 1,
     "max": 10000,
     "doc": "step cap of one drag"
    },
    "r1": {
     "type": "float",
     "required": true,
     "nullable": true,
     "min": 0.5,
     "max": 64,
     "doc": "motion supervision radius; null: auto"
    },
    "r2": {
     "type": "float",
     "required": true,
     "nullable": true,
     "min": 1,
     "max": 128,
     "doc": "tracking search half-size; null: auto"
    },
    "stop_dist": {
     "type": "float",
     "required": true,
     "nullable": true,
     "min": 0.1,
     "max": 64,
     "doc": "done when every handle is this close; null: auto"
    },
    "space": {
     "type": "enum",
     "required": true,
     "values": [
      "w+",
      "w"
     ],
     "doc": "optimize: w+ moves the first W+ rows independently, w one row shared by them; next drag"
    }
   }
  },
  "history": {
   "type": "map",
   "required": true,
   "fields": {
    "index": {
     "type": "int",
     "required": true,
     "min": 0
    },
    "size": {
     "type": "int",
     "required": true,
     "min": 1
    }
   }
  },
  "task": {
   "type": "map",
   "required": false,
   "nullable": true,
   "fields": {
    "kind": {
     "type": "enum",
     "required": true,
     "values": [
      "upload",
      "blend"
     ],
     "doc": "upload: toward an uploaded picture; blend: a local edit"
    },
    "method": {
     "type": "enum",
     "required": true,
     "values": [
      "encoder",
      "optimize"
     ],
     "doc": "encoder: one forward pass; optimize: + steps"
    },
    "max_steps": {
     "type": "int",
     "required": true,
     "min": 0,
     "max": 1000,
     "doc": "optimisation step cap"
    },
    "by": {
     "type": "str",
     "required": true,
     "nullable": true,
     "doc": "member id that started it; null: an HTTP upload"
    }
   },
   "doc": "the projection running now (status projecting or stopping); null: none"
  },
  "interrupted": {
   "type": "map",
   "required": false,
   "nullable": true,
   "fields": {
    "kind": {
     "type": "enum",
     "required": true,
     "values": [
      "drag",
      "upload",
      "blend"
     ],
     "doc": "drag, or the projection's kind"
    },
    "drag": {
     "type": "int",
     "required": true,
     "min": 0,
     "doc": "its run number"
    },
    "step": {
     "type": "int",
     "required": true,
     "min": 0,
     "doc": "the step whose image was kept (committed); 0: none, the image is as before"
    },
    "by": {
     "type": "str",
     "required": true,
     "nullable": true,
     "doc": "member id that started it; null: server-made"
    }
   },
   "doc": "the last run was cut short by a server crash (reported after the restart); null: it was not"
  },
  "upload": {
   "type": "map",
   "required": false,
   "nullable": true,
   "fields": {
    "key": {
     "type": "str",
     "required": true,
     "pattern": "^[0-9a-f]{64}$",
     "doc": "sha256 of the stored target PNG"
    },
    "w": {
     "type": "int",
     "required": true,
     "min": 1,
     "max": 4096
    },
    "h": {
     "type": "int",
     "required": true,
     "min": 1,
     "max": 4096
    }
   },
   "doc": "the room's last uploaded picture (GET /api/rooms/{room}/upload.png); null: none"
  },
  "state": {
   "type": "map",
   "required": true,
   "fields": {
    "image": {
     "type": "map",
     "required": true,
     "fields": {
      "model": {
       "type": "str",
       "required": true,
       "min_len": 1,
       "max_len": 64,
       "doc": "generator name"
      },
      "w": {
       "type": "int",
       "required": true,
       "min": 1,
       "max": 4096
      },
      "h": {
       "type": "int",
       "required": true,
       "min": 1,
       "max": 4096
      },
      "seed": {
       "type": "int",
       "required": true,
       "nullable": true,
       "min": 0,
       "max": 4294967295,
       "doc": "seed the image came from"
      },
      "truncation": {
       "type": "float",
       "required": true,
       "min": 0,
       "max": 2
      },
      "latent": {
       "type": "str",
       "required": true,
       "nullable": true,
       "pattern": "^[0-9a-f]{64}$",
       "doc": "committed latent; null: the seed's"
      }
     }
    },
    "pairs": {
     "type": "list",
     "required": true,
     "max_len": 64,
     "items": {
      "type": "map",
      "required": true,
      "fields": {
       "id": {
        "type": "str",
        "required": true,
        "pattern": "^[A-Za-z0-9_-]{1,32}$",
        "doc": "pair id chosen by the client that adds it"
       },
       "handle": {
        "type": "point",
        "required": true,
        "doc": "[x, y] image pixels; integer values are pixel centres; 0 <= x < W, 0 <= y < H"
       },
       "target": {
        "type": "point",
        "required": true,
        "doc": "[x, y] image pixels; integer values are pixel centres; 0 <= x < W, 0 <= y < H"
       },
       "owner": {
        "type": "str",
        "required": true,
        "nullable": true
       }
      }
     }
    },
    "mask": {
     "type": "map",
     "required": true,
     "fields": {
      "w": {
       "type": "int",
       "required": true,
       "min": 1,
       "max": 64
      },
      "h": {
       "type": "int",
       "required": true,
       "min": 1,
       "max": 64
      },
      "cells": {
       "type": "bin",
       "required": true,
       "max_len": 4096
      }
     },
     "doc": "grid of w x h cells over the image, row-major, one byte per cell: 0 none, 1 flexible, 2 fixed"
    },
    "params": {
     "type": "map",
     "required": true,
     "fields": {
      "mode": {
       "type": "enum",
       "required": true,
       "values": [
        "optimize",
        "predict"
       ],
       "doc": "optimize: DragGAN optimiser; predict: latent predictor"
      },
      "lr": {
       "type": "float",
       "required": true,
       "min": 0.000001,
       "max": 1,
       "doc": "optimiser learning rate"
      },
      "lambda": {
       "type": "float",
       "required": true,
       "min": 0,
       "max": 1000,
       "doc": "weight of the fixed-region (mask) loss"
      },
      "max_steps": {
       "type": "int",
       "required": true,
       "min": 1,
       "max": 10000,
       "doc": "step cap of one drag"
      },
      "r1": {
       "type": "float",
       "required": true,
       "nullable": true,
       "min": 0.5,
       "max": 64,
       "doc": "motion supervision radius; null: auto"
      },
      "r2": {
       "type": "float",
       "required": true,
       "nullable": true,
       "min": 1,
       "max": 128,
       "doc": "tracking search half-size; null: auto"
      },
      "stop_dist": {
       "type": "float",
       "required": true,
       "nullable": true,
       "min": 0.1,
       "max": 64,
       "doc": "done when every handle is this close; null: auto"
      },
      "space": {
       "type": "enum",
       "required": true,
       "values": [
        "w+",
        "w"
       ],
       "doc": "optimize: w+ moves the first W+ rows independently, w one row shared by them; next drag"
      }
     }
    },
    "status": {
     "type": "enum",
     "required": true,
     "values": [
      "idle",
      "running",
      "stopping",
      "projecting"
     ]
    },
    "step": {
     "type": "int",
     "required": true,
     "min": 0,
     "doc": "steps taken by the current (or last) drag"
    },
    "drag": {
     "type": "int",
     "required": true,
     "min": 0,
     "doc": "drag counter: increases at every start"
    },
    "history": {
     "type": "map",
     "required": true,
     "fields": {
      "index": {
       "type": "int",
       "required": true,
       "min": 0
      },
      "size": {
       "type": "int",
       "required": true,
       "min": 1
      }
     }
    },
    "task": {
     "type": "map",
     "required": false,
     "nullable": true,
     "fields": {
      "kind": {
       "type": "enum",
       "required": true,
       "values": [
        "upload",
        "blend"
       ],
       "doc": "upload: toward an uploaded picture; blend: a local edit"
      },
      "method": {
       "type": "enum",
       "required": true,
       "values": [
        "encoder",
        "optimize"
       ],
       "doc": "encoder: one forward pass; optimize: + steps"
      },
      "max_steps": {
       "type": "int",
       "required": true,
       "min": 0,
       "max": 1000,
       "doc": "optimisation step cap"
      },
      "by": {
       "type": "str",
       "required": true,
       "nullable": true,
       "doc": "member id that started it; null: an HTTP upload"
      }
     },
     "doc": "the projection running now (status projecting or stopping); null: none"
    },
    "upload": {
     "type": "map",
     "required": false,
     "nullable": true,
     "fields": {
      "key": {
       "type": "str",
       "required": true,
       "pattern": "^[0-9a-f]{64}$",
       "doc": "sha256 of the stored target PNG"
      },
      "w": {
       "type": "int",
       "required": true,
       "min": 1,
       "max": 4096
      },
      "h": {
       "type": "int",
       "required": true,
       "min": 1,
       "max": 4096
      }
     },
     "doc": "the room's last uploaded picture (GET /api/rooms/{room}/upload.png); null: none"
    },
    "interrupted": {
     "type": "map",
     "required": false,
     "nullable": true,
     "fields": {
      "kind": {
       "type": "enum",
       "required": true,
       "values": [
        "drag",
        "upload",
        "blend"
       ],
       "doc": "drag, or the projection's kind"
      },
      "drag": {
       "type": "int",
       "required": true,
       "min": 0,
       "doc": "its run number"
      },
      "step": {
       "type": "int",
       "required": true,
       "min": 0,
       "doc": "the step whose image was kept (committed); 0: none, the image is as before"
      },
      "by": {
       "type": "str",
       "required": true,
       "nullable": true,
       "doc": "member id that started it; null: server-made"
      }
     },
     "doc": "the last run was cut short by a server crash (reported after the restart); null: it was not"
    }
   }
  },
  "member": {
   "type": "map",
   "required": true,
   "fields": {
    "id": {
     "type": "str",
     "required": true,
     "pattern": "^[A-Za-z0-9_-]{1,32}$"
    },
    "name": {
     "type": "str",
     "required": true,
     "max_len": 32
    },
    "colour": {
     "type": "str",
     "required": true,
     "pattern": "^#[0-9a-f]{6}$"
    },
    "role": {
     "type": "enum",
     "required": true,
     "values": [
      "editor",
      "viewer"
     ]
    }
   }
  }
 },
 "client_messages": {
  "hello": {
   "direction": "c2s",
   "doc": "First message on a connection. Answered by welcome + snapshot (+ frame), or a close code.",
   "role": "any",
   "rate": null,
   "versioned": false,
   "fields": {
    "id": {
     "type": "int",
     "required": false,
     "min": 0,
     "max": 4294967295,
     "doc": "client message id, echoed as ref"
    },
    "v": {
     "type": "int",
     "required": true,
     "min": 0,
     "max": 65535,
     "doc": "PROTOCOL_VERSION the client speaks"
    },
    "cap": {
     "type": "str",
     "required": true,
     "pattern": "^[A-Za-z0-9_-]{1,128}$",
     "doc": "edit or view capability from the link's #fragment"
    },
    "name": {
     "type": "name",
     "required": true,
     "min_len": 0,
     "max_len": 32,
     "doc": "display name, printable, stripped; empty: server picks one"
    },
    "client_id": {
     "type": "str",
     "required": false,
     "pattern": "^[A-Za-z0-9_-]{8,64}$",
     "doc": "random per page load; keeps the member id on reconnect"
    },
    "secret": {
     "type": "str",
     "required": false,
     "pattern": "^[A-Za-z0-9_-]{22,64}$",
     "doc": "random per browser, kept: an editor keeps member id, name, colour after restarts"
    }
   }
  },
  "add_pair": {
   "direction": "c2s",
   "doc": "Add a handle/target pair.",
   "role": "editor",
   "rate": "edit",
   "versioned": true,
   "fields": {
    "id": {
     "type": "int",
     "required": false,
     "min": 0,
     "max": 4294967295,
     "doc": "client message id, echoed as ref"
    },
    "pair": {
     "type": "str",
     "required": true,
     "pattern": "^[A-Za-z0-9_-]{1,32}$",
     "doc": "pair id chosen by the client that adds it"
    },
    "handle": {
     "type": "point",
     "required": true,
     "doc": "[x, y] image pixels; integer values are pixel centres; 0 <= x < W, 0 <= y < H"
    },
    "target": {
     "type": "point",
     "required": true,
     "doc": "[x, y] image pixels; integer values are pixel centres; 0 <= x < W, 0 <= y < H"
    }
   }
  },
  "move_point": {
   "direction": "c2s",
   "doc": "Move a pair's handle or target (any editor may move any pair). During a drag: next tick.",
   "role": "editor",
   "rate": "edit",
   "versioned": true,
   "fields": {
    "id": {
     "type": "int",
     "required": false,
     "min": 0,
     "max": 4294967295,
     "doc": "client message id, echoed as ref"
    },
    "pair": {
     "type": "str",
     "required": true,
     "pattern": "^[A-Za-z0-9_-]{1,32}$",
     "doc": "pair id chosen by the client that adds it"
    },
    "which": {
     "type": "enum",
     "required": true,
     "values": [
      "handle",
      "target"
     ]
    },
    "pos": {
     "type": "point",
     "required": true,
     "doc": "[x, y] image pixels; integer values are pixel centres; 0 <= x < W, 0 <= y < H"
    }
   }
  },
  "remove_pair": {
   "direction": "c2s",
   "doc": "Remove one pair.",
   "role": "editor",
   "rate": "edit",
   "versioned": true,
   "fields": {
    "id": {
     "type": "int",
     "required": false,
     "min": 0,
     "max": 4294967295,
     "doc": "client message id, echoed as ref"
    },
    "pair": {
     "type": "str",
     "required": true,
     "pattern": "^[A-Za-z0-9_-]{1,32}$",
     "doc": "pair id chosen by the client that adds it"
    }
   }
  },
  "clear_points": {
   "direction": "c2s",
   "doc": "Remove every pair.",
   "role": "editor",
   "rate": "edit",
   "versioned": true,
   "fields": {
    "id": {
     "type": "int",
     "required": false,
     "min": 0,
     "max": 4294967295,
     "doc": "client message id, echoed as ref"
    }
   }
  },
  "paint_mask": {
   "direction": "c2s",
   "doc": "Paint one stroke (capsules of radius around the segments) into the mask grid.",
   "role": "editor",
   "rate": "edit",
   "versioned": true,
   "fields": {
    "id": {
     "type": "int",
     "required": false,
     "min": 0,
     "max": 4294967295,
     "doc": "client message id, echoed as ref"
    },
    "mode": {
     "type": "enum",
     "required": true,
     "values": [
      "flexible",
      "fixed",
      "erase"
     ]
    },
    "radius": {
     "type": "float",
     "required": true,
     "min": 0.5,
     "max": 256,
     "doc": "brush radius in image pixels"
    },
    "points": {
     "type": "list",
     "required": true,
     "min_len": 1,
     "max_len": 256,
     "items": {
      "type": "point",
      "required": true,
      "doc": "[x, y] image pixels; integer values are pixel centres; 0 <= x < W, 0 <= y < H"
     }
    }
   }
  },
  "clear_mask": {
   "direction": "c2s",
   "doc": "Erase the whole mask.",
   "role": "editor",
   "rate": "edit",
   "versioned": true,
   "fields": {
    "id": {
     "type": "int",
     "required": false,
     "min": 0,
     "max": 4294967295,
     "doc": "client message id, echoed as ref"
    }
   }
  },
  "set_params": {
   "direction": "c2s",
   "doc": "Change drag parameters (only the keys given).",
   "role": "editor",
   "rate": "edit",
   "versioned": true,
   "fields": {
    "id": {
     "type": "int",
     "required": false,
     "min": 0,
     "max": 4294967295,
     "doc": "client message id, echoed as ref"
    },
    "params": {
     "type": "map",
     "required": true,
     "min_len": 1,
     "fields": {
      "mode": {
       "type": "enum",
       "required": false,
       "values": [
        "optimize",
        "predict"
       ],
       "doc": "optimize: DragGAN optimiser; predict: latent predictor"
      },
      "lr": {
       "type": "float",
       "required": false,
       "min": 0.000001,
       "max": 1,
       "doc": "optimiser learning rate"
      },
      "lambda": {
       "type": "float",
       "required": false,
       "min": 0,
       "max": 1000,
       "doc": "weight of the fixed-region (mask) loss"
      },
      "max_steps": {
       "type": "int",
       "required": false,
       "min": 1,
       "max": 10000,
       "doc": "step cap of one drag"
      },
      "r1": {
       "type": "float",
       "required": false,
       "nullable": true,
       "min": 0.5,
       "max": 64,
       "doc": "motion supervision radius; null: auto"
      },
      "r2": {
       "type": "float",
       "required": false,
       "nullable": true,
       "min": 1,
       "max": 128,
       "doc": "tracking search half-size; null: auto"
      },
      "stop_dist": {
       "type": "float",
       "required": false,
       "nullable": true,
       "min": 0.1,
       "max": 64,
       "doc": "done when every handle is this close; null: auto"
      },
      "space": {
       "type": "enum",
       "required": false,
       "values": [
        "w+",
        "w"
       ],
       "doc": "optimize: w+ moves the first W+ rows independently, w one row shared by them; next drag"
      }
     }
    }
   }
  },
  "start": {
   "direction": "c2s",
   "doc": "Start a drag from the current image and points (refused without points).",
   "role": "editor",
   "rate": "edit",
   "versioned": true,
   "fields": {
    "id": {
     "type": "int",
     "required": false,
     "min": 0,
     "max": 4294967295,
     "doc": "client message id, echoed as ref"
    }
   }
  },
  "stop": {
   "direction": "c2s",
   "doc": "Ask the running drag or projection to stop; it commits what it reached.",
   "role": "editor",
   "rate": "edit",
   "versioned": true,
   "fields": {
    "id": {
     "type": "int",
     "required": false,
     "min": 0,
     "max": 4294967295,
     "doc": "client message id, echoed as ref"
    }
   }
  },
  "new_image": {
   "direction": "c2s",
   "doc": "New image from a seed; clears points and mask; commits a history entry.",
   "role": "editor",
   "rate": "edit",
   "versioned": true,
   "fields": {
    "id": {
     "type": "int",
     "required": false,
     "min": 0,
     "max": 4294967295,
     "doc": "client message id, echoed as ref"
    },
    "seed": {
     "type": "int",
     "required": true,
     "min": 0,
     "max": 4294967295
    },
    "truncation": {
     "type": "float",
     "required": false,
     "min": 0,
     "max": 2
    }
   }
  },
  "blend": {
   "direction": "c2s",
   "doc": "Local edit: blend the source into the mask's flexible area, then project toward the blend.",
   "role": "editor",
   "rate": "edit",
   "versioned": true,
   "fields": {
    "id": {
     "type": "int",
     "required": false,
     "min": 0,
     "max": 4294967295,
     "doc": "client message id, echoed as ref"
    },
    "source": {
     "type": "enum",
     "required": true,
     "values": [
      "seed",
      "upload"
     ],
     "doc": "seed: another seed's image; upload: the last upload"
    },
    "seed": {
     "type": "int",
     "required": false,
     "min": 0,
     "max": 4294967295,
     "doc": "source seed (source seed only)"
    },
    "truncation": {
     "type": "float",
     "required": false,
     "min": 0,
     "max": 2
    },
    "steps": {
     "type": "int",
     "required": false,
     "min": 1,
     "max": 1000,
     "doc": "optimisation steps"
    }
   },
   "when": {
    "field": "source",
    "required": {
     "seed": [
      "seed"
     ]
    },
    "forbidden": {
     "upload": [
      "seed",
      "truncation"
     ]
    }
   }
  },
  "reset": {
   "direction": "c2s",
   "doc": "The room's original image again, as a new history entry (undo returns); clears points, mask.",
   "role": "editor",
   "rate": "edit",
   "versioned": true,
   "fields": {
    "id": {
     "type": "int",
     "required": false,
     "min": 0,
     "max": 4294967295,
     "doc": "client message id, echoed as ref"
    }
   }
  },
  "undo": {
   "direction": "c2s",
   "doc": "Take back your own newest action (yours only; section 7 of protocol.md).",
   "role": "editor",
   "rate": "edit",
   "versioned": true,
   "fields": {
    "id": {
     "type": "int",
     "required": false,
     "min": 0,
     "max": 4294967295,
     "doc": "client message id, echoed as ref"
    }
   }
  },
  "redo": {
   "direction": "c2s",
   "doc": "Apply again your own newest undone action.",
   "role": "editor",
   "rate": "edit",
   "versioned": true,
   "fields": {
    "id": {
     "type": "int",
     "required": false,
     "min": 0,
     "max": 4294967295,
     "doc": "client message id, echoed as ref"
    }
   }
  },
  "set_name": {
   "direction": "c2s",
   "doc": "Change the display name (presence, not versioned).",
   "role": "editor",
   "rate": "edit",
   "versioned": false,
   "fields": {
    "id": {
     "type": "int",
     "required": false,
     "min": 0,
     "max": 4294967295,
     "doc": "client message id, echoed as ref"
    },
    "name": {
     "type": "name",
     "required": true,
     "min_len": 1,
     "max_len": 32,
     "doc": "display name, printable, stripped, not empty"
    }
   }
  },
  "cursor": {
   "direction": "c2s",
   "doc": "Live cursor position (presence, throttled, never versioned); null hides it.",
   "role": "editor",
   "rate": "cursor",
   "versioned": false,
   "fields": {
    "id": {
     "type": "int",
     "required": false,
     "min": 0,
     "max": 4294967295,
     "doc": "client message id, echoed as ref"
    },
    "pos": {
     "type": "point",
     "required": true,
     "nullable": true
    }
   }
  },
  "ack": {
   "direction": "c2s",
   "doc": "Frame drawn: returns a frame credit (pacing).",
   "role": "any",
   "rate": "control",
   "versioned": false,
   "fields": {
    "id": {
     "type": "int",
     "required": false,
     "min": 0,
     "max": 4294967295,
     "doc": "client message id, echoed as ref"
    },
    "seq": {
     "type": "int",
     "required": true,
     "min": 0,
     "max": 9007199254740991
    }
   }
  },
  "ping": {
   "direction": "c2s",
   "doc": "Keep-alive; answered by pong.",
   "role": "any",
   "rate": "control",
   "versioned": false,
   "fields": {
    "id": {
     "type": "int",
     "required": false,
     "min": 0,
     "max": 4294967295,
     "doc": "client message id, echoed as ref"
    }
   }
  }
 },
 "server_messages": {
  "welcome": {
   "direction": "s2c",
   "doc": "Answer to hello: who you are in this room.",
   "fields": {
    "v": {
     "type": "int",
     "required": true,
     "min": 0
    },
    "room": {
     "type": "str",
     "required": true,
     "pattern": "^[A-Za-z0-9_-]{1,32}$"
    },
    "you": {
     "type": "str",
     "required": true,
     "pattern": "^[A-Za-z0-9_-]{1,32}$"
    },
    "role": {
     "type": "enum",
     "required": true,
     "values": [
      "editor",
      "viewer"
     ]
    },
    "name": {
     "type": "str",
     "required": true,
     "max_len": 32
    },
    "colour": {
     "type": "str",
     "required": true,
     "pattern": "^#[0-9a-f]{6}$"
    },
    "limits": {
     "type": "dict",
     "required": true,
     "items": {
      "type": "float",
      "required": true
     }
    }
   }
  },
  "snapshot": {
   "direction": "s2c",
   "doc": "The whole room: state at a version, editors present, spectator count. Replaces client state.",
   "fields": {
    "version": {
     "type": "int",
     "required": true,
     "min": 0
    },
    "state": {
     "type": "map",
     "required": true,
     "fields": {
      "image": {
       "type": "map",
       "required": true,
       "fields": {
        "model": {
         "type": "str",
         "required": true,
         "min_len": 1,
         "max_len": 64,
         "doc": "generator name"
        },
        "w": {
         "type": "int",
         "required": true,
         "min": 1,
         "max": 4096
        },
        "h": {
         "type": "int",
         "required": true,
         "min": 1,
         "max": 4096
        },
        "seed": {
         "type": "int",
         "required": true,
         "nullable": true,
         "min": 0,
         "max": 4294967295,
         "doc": "seed the image came from"
        },
        "truncation": {
         "type": "float",
         "required": true,
         "min": 0,
         "max": 2
        },
        "latent": {
         "type": "str",
         "required": true,
         "nullable": true,
         "pattern": "^[0-9a-f]{64}$",
         "doc": "committed latent; null: the seed's"
        }
       }
      },
      "pairs": {
       "type": "list",
       "required": true,
       "max_len": 64,
       "items": {
        "type": "map",
        "required": true,
        "fields": {
         "id": {
          "type": "str",
          "required": true,
          "pattern": "^[A-Za-z0-9_-]{1,32}$",
          "doc": "pair id chosen by the client that adds it"
         },
         "handle": {
          "type": "point",
          "required": true,
          "doc": "[x, y] image pixels; integer values are pixel centres; 0 <= x < W, 0 <= y < H"
         },
         "target": {
          "type": "point",
          "required": true,
          "doc": "[x, y] image pixels; integer values are pixel centres; 0 <= x < W, 0 <= y < H"
         },
         "owner": {
          "type": "str",
          "required": true,
          "nullable": true
         }
        }
       }
      },
      "mask": {
       "type": "map",
       "required": true,
       "fields": {
        "w": {
         "type": "int",
         "required": true,
         "min": 1,
         "max": 64
        },
        "h": {
         "type": "int",
         "required": true,
         "min": 1,
         "max": 64
        },
        "cells": {
         "type": "bin",
         "required": true,
         "max_len": 4096
        }
       },
       "doc": "grid of w x h cells over the image, row-major, one byte per cell: 0 none, 1 flexible, 2 fixed"
      },
      "params": {
       "type": "map",
       "required": true,
       "fields": {
        "mode": {
         "type": "enum",
         "required": true,
         "values": [
          "optimize",
          "predict"
         ],
         "doc": "optimize: DragGAN optimiser; predict: latent predictor"
        },
        "lr": {
         "type": "float",
         "required": true,
         "min": 0.000001,
         "max": 1,
         "doc": "optimiser learning rate"
        },
        "lambda": {
         "type": "float",
         "required": true,
         "min": 0,
         "max": 1000,
         "doc": "weight of the fixed-region (mask) loss"
        },
        "max_steps": {
         "type": "int",
         "required": true,
         "min": 1,
         "max": 10000,
         "doc": "step cap of one drag"
        },
        "r1": {
         "type": "float",
         "required": true,
         "nullable": true,
         "min": 0.5,
         "max": 64,
         "doc": "motion supervision radius; null: auto"
        },
        "r2": {
         "type": "float",
         "required": true,
         "nullable": true,
         "min": 1,
         "max": 128,
         "doc": "tracking search half-size; null: auto"
        },
        "stop_dist": {
         "type": "float",
         "required": true,
         "nullable": true,
         "min": 0.1,
         "max": 64,
         "doc": "done when every handle is this close; null: auto"
        },
        "space": {
         "type": "enum",
         "required": true,
         "values": [
          "w+",
          "w"
         ],
         "doc": "optimize: w+ moves the first W+ rows independently, w one row shared by them; next drag"
        }
       }
      },
      "status": {
       "type": "enum",
       "required": true,
       "values": [
        "idle",
        "running",
        "stopping",
        "projecting"
       ]
      },
      "step": {
       "type": "int",
       "required": true,
       "min": 0,
       "doc": "steps taken by the current (or last) drag"
      },
      "drag": {
       "type": "int",
       "required": true,
       "min": 0,
       "doc": "drag counter: increases at every start"
      },
      "history": {
       "type": "map",
       "required": true,
       "fields": {
        "index": {
         "type": "int",
         "required": true,
         "min": 0
        },
        "size": {
         "type": "int",
         "required": true,
         "min": 1
        }
       }
      },
      "task": {
       "type": "map",
       "required": false,
       "nullable": true,
       "fields": {
        "kind": {
         "type": "enum",
         "required": true,
         "values": [
          "upload",
          "blend"
         ],
         "doc": "upload: toward an uploaded picture; blend: a local edit"
        },
        "method": {
         "type": "enum",
         "required": true,
         "values": [
          "encoder",
          "optimize"
         ],
         "doc": "encoder: one forward pass; optimize: + steps"
        },
        "max_steps": {
         "type": "int",
         "required": true,
         "min": 0,
         "max": 1000,
         "doc": "optimisation step cap"
        },
        "by": {
         "type": "str",
         "required": true,
         "nullable": true,
         "doc": "member id that started it; null: an HTTP upload"
        }
       },
       "doc": "the projection running now (status projecting or stopping); null: none"
      },
      "upload": {
       "type": "map",
       "required": false,
       "nullable": true,
       "fields": {
        "key": {
         "type": "str",
         "required": true,
         "pattern": "^[0-9a-f]{64}$",
         "doc": "sha256 of the stored target PNG"
        },
        "w": {
         "type": "int",
         "required": true,
         "min": 1,
         "max": 4096
        },
        "h": {
         "type": "int",
         "required": true,
         "min": 1,
         "max": 4096
        }
       },
       "doc": "the room's last uploaded picture (GET /api/rooms/{room}/upload.png); null: none"
      },
      "interrupted": {
       "type": "map",
       "required": false,
       "nullable": true,
       "fields": {
        "kind": {
         "type": "enum",
         "required": true,
         "values": [
          "drag",
          "upload",
          "blend"
         ],
         "doc": "drag, or the projection's kind"
        },
        "drag": {
         "type": "int",
         "required": true,
         "min": 0,
         "doc": "its run number"
        },
        "step": {
         "type": "int",
         "required": true,
         "min": 0,
         "doc": "the step whose image was kept (committed); 0: none, the image is as before"
        },
        "by": {
         "type": "str",
         "required": true,
         "nullable": true,
         "doc": "member id that started it; null: server-made"
        }
       },
       "doc": "the last run was cut short by a server crash (reported after the restart); null: it was not"
      }
     }
    },
    "members": {
     "type": "list",
     "required": true,
     "items": {
      "type": "map",
      "required": true,
      "fields": {
       "id": {
        "type": "str",
        "required": true,
        "pattern": "^[A-Za-z0-9_-]{1,32}$"
       },
       "name": {
        "type": "str",
        "required": true,
        "max_len": 32
       },
       "colour": {
        "type": "str",
        "required": true,
        "pattern": "^#[0-9a-f]{6}$"
       },
       "role": {
        "type": "enum",
        "required": true,
        "values": [
         "editor",
         "viewer"
        ]
       }
      }
     }
    },
    "spectators": {
     "type": "int",
     "required": true,
     "min": 0
    }
   }
  },
  "op": {
   "direction": "s2c",
   "doc": "An applied edit: version v, author by, the author's message id ref; patch replaces state keys.",
   "fields": {
    "v": {
     "type": "int",
     "required": true,
     "min": 1
    },
    "op": {
     "type": "enum",
     "required": true,
     "values": [
      "add_pair",
      "move_point",
      "remove_pair",
      "clear_points",
      "paint_mask",
      "clear_mask",
      "set_params",
      "start",
      "stop",
      "new_image",
      "blend",
      "reset",
      "undo",
      "redo",
      "finish",
      "commit",
      "upload"
     ]
    },
    "by": {
     "type": "str",
     "required": true,
     "nullable": true,
     "doc": "member id; null for server-made ops (finish, commit)"
    },
    "ref": {
     "type": "int",
     "required": true,
     "nullable": true,
     "min": 0,
     "max": 4294967295
    },
    "patch": {
     "type": "map",
     "required": true,
     "min_len": 1,
     "fields": {
      "image": {
       "type": "map",
       "required": false,
       "fields": {
        "model": {
         "type": "str",
         "required": true,
         "min_len": 1,
         "max_len": 64,
         "doc": "generator name"
        },
        "w": {
         "type": "int",
         "required": true,
         "min": 1,
         "max": 4096
        },
        "h": {
         "type": "int",
         "required": true,
         "min": 1,
         "max": 4096
        },
        "seed": {
         "type": "int",
         "required": true,
         "nullable": true,
         "min": 0,
         "max": 4294967295,
         "doc": "seed the image came from"
        },
        "truncation": {
         "type": "float",
         "required": true,
         "min": 0,
         "max": 2
        },
        "latent": {
         "type": "str",
         "required": true,
         "nullable": true,
         "pattern": "^[0-9a-f]{64}$",
         "doc": "committed latent; null: the seed's"
        }
       }
      },
      "pairs": {
       "type": "list",
       "required": false,
       "max_len": 64,
       "items": {
        "type": "map",
        "required": true,
        "fields": {
         "id": {
          "type": "str",
          "required": true,
          "pattern": "^[A-Za-z0-9_-]{1,32}$",
          "doc": "pair id chosen by the client that adds it"
         },
         "handle": {
          "type": "point",
          "required": true,
          "doc": "[x, y] image pixels; integer values are pixel centres; 0 <= x < W, 0 <= y < H"
         },
         "target": {
          "type": "point",
          "required": true,
          "doc": "[x, y] image pixels; integer values are pixel centres; 0 <= x < W, 0 <= y < H"
         },
         "owner": {
          "type": "str",
          "required": true,
          "nullable": true
         }
        }
       }
      },
      "mask": {
       "type": "map",
       "required": false,
       "fields": {
        "w": {
         "type": "int",
         "required": true,
         "min": 1,
         "max": 64
        },
        "h": {
         "type": "int",
         "required": true,
         "min": 1,
         "max": 64
        },
        "cells": {
         "type": "bin",
         "required": true,
         "max_len": 4096
        }
       },
       "doc": "grid of w x h cells over the image, row-major, one byte per cell: 0 none, 1 flexible, 2 fixed"
      },
      "params": {
       "type": "map",
       "required": false,
       "fields": {
        "mode": {
         "type": "enum",
         "required": true,
         "values": [
          "optimize",
          "predict"
         ],
         "doc": "optimize: DragGAN optimiser; predict: latent predictor"
        },
        "lr": {
         "type": "float",
         "required": true,
         "min": 0.000001,
         "max": 1,
         "doc": "optimiser learning rate"
        },
        "lambda": {
         "type": "float",
         "required": true,
         "min": 0,
         "max": 1000,
         "doc": "weight of the fixed-region (mask) loss"
        },
        "max_steps": {
         "type": "int",
         "required": true,
         "min": 1,
         "max": 10000,
         "doc": "step cap of one drag"
        },
        "r1": {
         "type": "float",
         "required": true,
         "nullable": true,
         "min": 0.5,
         "max": 64,
         "doc": "motion supervision radius; null: auto"
        },
        "r2": {
         "type": "float",
         "required": true,
         "nullable": true,
         "min": 1,
         "max": 128,
         "doc": "tracking search half-size; null: auto"
        },
        "stop_dist": {
         "type": "float",
         "required": true,
         "nullable": true,
         "min": 0.1,
         "max": 64,
         "doc": "done when every handle is this close; null: auto"
        },
        "space": {
         "type": "enum",
         "required": true,
         "values": [
          "w+",
          "w"
         ],
         "doc": "optimize: w+ moves the first W+ rows independently, w one row shared by them; next drag"
        }
       }
      },
      "status": {
       "type": "enum",
       "required": false,
       "values": [
        "idle",
        "running",
        "stopping",
        "projecting"
       ]
      },
      "step": {
       "type": "int",
       "required": false,
       "min": 0,
       "doc": "steps taken by the current (or last) drag"
      },
      "drag": {
       "type": "int",
       "required": false,
       "min": 0,
       "doc": "drag counter: increases at every start"
      },
      "history": {
       "type": "map",
       "required": false,
       "fields": {
        "index": {
         "type": "int",
         "required": true,
         "min": 0
        },
        "size": {
         "type": "int",
         "required": true,
         "min": 1
        }
       }
      },
      "task": {
       "type": "map",
       "required": false,
       "nullable": true,
       "fields": {
        "kind": {
         "type": "enum",
         "required": true,
         "values": [
          "upload",
          "blend"
         ],
         "doc": "upload: toward an uploaded picture; blend: a local edit"
        },
        "method": {
         "type": "enum",
         "required": true,
         "values": [
          "encoder",
          "optimize"
         ],
         "doc": "encoder: one forward pass; optimize: + steps"
        },
        "max_steps": {
         "type": "int",
         "required": true,
         "min": 0,
         "max": 1000,
         "doc": "optimisation step cap"
        },
        "by": {
         "type": "str",
         "required": true,
         "nullable": true,
         "doc": "member id that started it; null: an HTTP upload"
        }
       },
       "doc": "the projection running now (status projecting or stopping); null: none"
      },
      "upload": {
       "type": "map",
       "required": false,
       "nullable": true,
       "fields": {
        "key": {
         "type": "str",
         "required": true,
         "pattern": "^[0-9a-f]{64}$",
         "doc": "sha256 of the stored target PNG"
        },
        "w": {
         "type": "int",
         "required": true,
         "min": 1,
         "max": 4096
        },
        "h": {
         "type": "int",
         "required": true,
         "min": 1,
         "max": 4096
        }
       },
       "doc": "the room's last uploaded picture (GET /api/rooms/{room}/upload.png); null: none"
      },
      "interrupted": {
       "type": "map",
       "required": false,
       "nullable": true,
       "fields": {
        "kind": {
         "type": "enum",
         "required": true,
         "values": [
          "drag",
          "upload",
          "blend"
         ],
         "doc": "drag, or the projection's kind"
        },
        "drag": {
         "type": "int",
         "required": true,
         "min": 0,
         "doc": "its run number"
        },
        "step": {
         "type": "int",
         "required": true,
         "min": 0,
         "doc": "the step whose image was kept (committed); 0: none, the image is as before"
        },
        "by": {
         "type": "str",
         "required": true,
         "nullable": true,
         "doc": "member id that started it; null: server-made"
        }
       },
       "doc": "the last run was cut short by a server crash (reported after the restart); null: it was not"
      }
     }
    }
   }
  },
  "presence": {
   "direction": "s2c",
   "doc": "Who is here: join/leave/rename of editors, cursors, spectator count. Never versioned.",
   "fields": {
    "ev": {
     "type": "enum",
     "required": true,
     "values": [
      "join",
      "leave",
      "rename",
      "cursor",
      "spectators"
     ]
    },
    "member": {
     "type": "map",
     "required": false,
     "fields": {
      "id": {
       "type": "str",
       "required": true,
       "pattern": "^[A-Za-z0-9_-]{1,32}$"
      },
      "name": {
       "type": "str",
       "required": true,
       "max_len": 32
      },
      "colour": {
       "type": "str",
       "required": true,
       "pattern": "^#[0-9a-f]{6}$"
      },
      "role": {
       "type": "enum",
       "required": true,
       "values": [
        "editor",
        "viewer"
       ]
      }
     }
    },
    "id": {
     "type": "str",
     "required": false,
     "pattern": "^[A-Za-z0-9_-]{1,32}$"
    },
    "name": {
     "type": "str",
     "required": false,
     "max_len": 32
    },
    "pos": {
     "type": "point",
     "required": false,
     "nullable": true
    },
    "count": {
     "type": "int",
     "required": false,
     "min": 0
    }
   },
   "variants": {
    "join": [
     "member"
    ],
    "leave": [
     "id"
    ],
    "rename": [
     "id",
     "name"
    ],
    "cursor": [
     "id",
     "pos"
    ],
    "spectators": [
     "count"
    ]
   }
  },
  "frame": {
   "direction": "s2c",
   "doc": "A rendered frame: JPEG bytes, tracked handle positions, progress. Latest wins; ack it.",
   "fields": {
    "seq": {
     "type": "int",
     "required": true,
     "min": 1,
     "doc": "room frame counter"
    },
    "drag": {
     "type": "int",
     "required": true,
     "min": 0
    },
    "step": {
     "type": "int",
     "required": true,
     "min": 0
    },
    "status": {
     "type": "enum",
     "required": true,
     "values": [
      "idle",
      "running",
      "stopping",
      "projecting"
     ]
    },
    "w": {
     "type": "int",
     "required": true,
     "min": 1
    },
    "h": {
     "type": "int",
     "required": true,
     "min": 1
    },
    "jpeg": {
     "type": "bin",
     "required": true
    },
    "handles": {
     "type": "dict",
     "required": true,
     "pattern": "^[A-Za-z0-9_-]{1,32}$",
     "items": {
      "type": "point",
      "required": true,
      "doc": "[x, y] image pixels; integer values are pixel centres; 0 <= x < W, 0 <= y < H"
     },
     "doc": "pair id -> tracked handle"
    },
    "fps": {
     "type": "float",
     "required": false,
     "nullable": true,
     "min": 0
    },
    "lost": {
     "type": "list",
     "required": false,
     "max_len": 64,
     "items": {
      "type": "str",
      "required": true,
      "pattern": "^[A-Za-z0-9_-]{1,32}$",
      "doc": "pair id chosen by the client that adds it"
     },
     "doc": "drag: pairs whose handle's feature is no longer found near it"
    },
    "psnr": {
     "type": "float",
     "required": false,
     "nullable": true,
     "doc": "projection: PSNR to the target, dB"
    },
    "loss": {
     "type": "float",
     "required": false,
     "nullable": true,
     "doc": "projection: the objective after the step"
    }
   }
  },
  "status": {
   "direction": "s2c",
   "doc": "A drag or projection event: started, or finished with a reason.",
   "fields": {
    "status": {
     "type": "enum",
     "required": true,
     "values": [
      "idle",
      "running",
      "stopping",
      "projecting"
     ]
    },
    "reason": {
     "type": "enum",
     "required": true,
     "nullable": true,
     "values": [
      "reached",
      "converged",
      "max_steps",
      "stalled",
      "lost",
      "stopped",
      "error"
     ]
    },
    "drag": {
     "type": "int",
     "required": true,
     "min": 0
    },
    "step": {
     "type": "int",
     "required": true,
     "min": 0
    },
    "message": {
     "type": "str",
     "required": false,
     "max_len": 512
    }
   }
  },
  "error": {
   "direction": "s2c",
   "doc": "A refusal or failure; ref is the refused message's id.",
   "fields": {
    "code": {
     "type": "enum",
     "required": true,
     "values": [
      "malformed",
      "unknown_type",
      "invalid_field",
      "out_of_bounds",
      "too_large",
      "unexpected_hello",
      "forbidden",
      "rate_limited",
      "unknown_pair",
      "duplicate_pair",
      "too_many_pairs",
      "busy",
      "already_running",
      "not_running",
      "no_points",
      "nothing_to_undo",
      "nothing_to_redo",
      "undo_conflict",
      "no_region",
      "no_upload",
      "storage_failed",
      "engine_failed",
      "internal"
     ]
    },
    "message": {
     "type": "str",
     "required": true,
     "max_len": 512
    },
    "ref": {
     "type": "int",
     "required": true,
     "nullable": true,
     "min": 0,
     "max": 4294967295
    },
    "field": {
     "type": "str",
     "required": false,
     "max_len": 128
    }
   }
  },
  "pong": {
   "direction": "s2c",
   "doc": "Answer to ping.",
   "fields": {
    "ref": {
     "type": "int",
     "required": true,
     "nullable": true,
     "min": 0,
     "max": 4294967295
    },
    "time": {
     "type": "float",
     "required": true,
     "doc": "server wall-clock time, seconds since the epoch"
    }
   }
  },
  "undo_state": {
   "direction": "s2c",
   "doc": "Your own undo and redo stacks (to you only): after you join and whenever they change.",
   "fields": {
    "undo": {
     "type": "int",
     "required": true,
     "min": 0,
     "doc": "actions you can undo"
    },
    "redo": {
     "type": "int",
     "required": true,
     "min": 0,
     "doc": "actions you can redo"
    },
    "undo_kind": {
     "type": "str",
     "required": true,
     "nullable": true,
     "max_len": 32,
     "doc": "what the next undo takes back (an op name)"
    },
    "redo_kind": {
     "type": "str",
     "required": true,
     "nullable": true,
     "max_len": 32,
     "doc": "what the next redo applies again"
    }
   }
  }
 },
 "errors": {
  "malformed": {
   "message": "message is not a valid msgpack map",
   "strike": true
  },
  "unknown_type": {
   "message": "unknown message type",
   "strike": true
  },
  "invalid_field": {
   "message": "a field is missing, unknown, or has a wrong type or value",
   "strike": true
  },
  "out_of_bounds": {
   "message": "a point lies outside the image",
   "strike": true
  },
  "too_large": {
   "message": "message too large",
   "strike": false
  },
  "unexpected_hello": {
   "message": "already joined",
   "strike": true
  },
  "forbidden": {
   "message": "view-only link: editing is not allowed",
   "strike": false
  },
  "rate_limited": {
   "message": "too many messages; slow down",
   "strike": true
  },
  "unknown_pair": {
   "message": "no such pair",
   "strike": false
  },
  "duplicate_pair": {
   "message": "a pair with this id exists",
   "strike": false
  },
  "too_many_pairs": {
   "message": "too many point pairs",
   "strike": false
  },
  "busy": {
   "message": "not allowed while a drag or projection runs; stop it first",
   "strike": false
  },
  "already_running": {
   "message": "a drag is already running",
   "strike": false
  },
  "not_running": {
   "message": "no drag is running",
   "strike": false
  },
  "no_points": {
   "message": "add a point pair first",
   "strike": false
  },
  "nothing_to_undo": {
   "message": "nothing to undo",
   "strike": false
  },
  "nothing_to_redo": {
   "message": "nothing to redo",
   "strike": false
  },
  "undo_conflict": {
   "message": "someone else changed it since: your action is skipped",
   "strike": false
  },
  "no_region": {
   "message": "paint the area to blend with the flexible brush first",
   "strike": false
  },
  "no_upload": {
   "message": "upload a picture first",
   "strike": false
  },
  "storage_failed": {
   "message": "the server could not save the room; the edit is kept in memory",
   "strike": false
  },
  "engine_failed": {
   "message": "the drag failed on the server",
   "strike": false
  },
  "internal": {
   "message": "internal server error",
   "strike": false
  }
 },
 "close_codes": {
  "bad_hello": {
   "code": 4000,
   "reason": "first message must be a valid hello",
   "reconnect": false
  },
  "bad_capability": {
   "code": 4001,
   "reason": "invalid or expired link",
   "reconnect": false
  },
  "version_mismatch": {
   "code": 4002,
   "reason": "protocol version mismatch; reload the page",
   "reconnect": false
  },
  "origin_forbidden": {
   "code": 4003,
   "reason": "origin not allowed",
   "reconnect": false
  },
  "room_not_found": {
   "code": 4004,
   "reason": "room not found",
   "reconnect": false
  },
  "room_full": {
   "code": 4005,
   "reason": "room is full",
   "reconnect": true
  },
  "server_full": {
   "code": 4006,
   "reason": "server is full",
   "reconnect": true
  },
  "hello_timeout": {
   "code": 4008,
   "reason": "no hello in time",
   "reconnect": true
  },
  "too_large": {
   "code": 4009,
   "reason": "message too large",
   "reconnect": false
  },
  "rate_limited": {
   "code": 4010,
   "reason": "rate limit exceeded",
   "reconnect": true
  },
  "too_slow": {
   "code": 4011,
   "reason": "connection fell behind; reconnect to resync",
   "reconnect": true
  },
  "shutting_down": {
   "code": 4012,
   "reason": "server restarting",
   "reconnect": true
  },
  "protocol_violation": {
   "code": 4013,
   "reason": "too many invalid messages",
   "reconnect": false
  },
  "room_closed": {
   "code": 4014,
   "reason": "room was closed",
   "reconnect": false
  },
  "idle_timeout": {
   "code": 4015,
   "reason": "connection idle",
   "reconnect": true
  },
  "internal_error": {
   "code": 4016,
   "reason": "internal server error",
   "reconnect": true
  },
  "replaced": {
   "code": 4017,
   "reason": "joined again from another connection",
   "reconnect": false
  }
 }
});
