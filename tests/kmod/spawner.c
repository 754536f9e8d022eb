/* spawner: 4 threads that keep creating and joining short-lived threads, so a freeze
 * always races with clone() and exit. Usage: spawner READY STOP
 * Writes READY ("ready pid=P") once running, stops when STOP exists, prints the number
 * of threads created, exits 0 unless a pthread call failed. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static atomic_long created;
static atomic_int stop, failed;

static void *child(void *arg)
{
	volatile unsigned long x = (unsigned long)arg;
	for (int i = 0; i < 1000; i++)
		x = x * 6364136223846793005UL + 1;
	return (void *)x;
}

static void *spawner(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		pthread_t t[4];
		int n = 0;
		for (int i = 0; i < 4; i++) {
			if (pthread_create(&t[n], NULL, child, (void *)(long)i) == 0)
				n++;
			else
				atomic_store(&failed, 1);
		}
		for (int i = 0; i < n; i++)
			pthread_join(t[i], NULL);
		atomic_fetch_add(&created, n);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t s[4];
	if (argc != 3)
		return 2;
	for (int i = 0; i < 4; i++)
		if (pthread_create(&s[i], NULL, spawner, NULL))
			return 3;
	FILE *f = fopen(argv[1], "w");
	if (!f)
		return 3;
	fprintf(f, "ready pid=%d\n", getpid());
	fclose(f);
	while (access(argv[2], F_OK) != 0)
		usleep(10000);
	atomic_store(&stop, 1);
	for (int i = 0; i < 4; i++)
		pthread_join(s[i], NULL);
	printf("created %ld threads\n", atomic_load(&created));
	return atomic_load(&failed) ? 1 : 0;
}
