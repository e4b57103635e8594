/*
 * memstore: an in-memory storage for berth written in C, through berth's storage callbacks.
 * It shows what a host implements to keep a registry's data wherever it likes, and it is
 * thread-safe, as berth requires: berth calls it from its worker threads at once.
 */
#ifndef BERTH_MEMSTORE_H
#define BERTH_MEMSTORE_H

#include "berth.h"

/* Configures `config` to store data in a new memstore, freed when berth lets go of it. */
berth_result memstore_install(berth_config *config);

#endif
